// A reminder bot: "/remind 10m stretch your legs" (or 2h, 1d) and the bot
// writes back when the time has come. "/list" shows what is pending.
// Reminders are kept in the bot's storage; bot.toml runs the bot every
// five minutes (`[schedule]`), and those runs send what is due.

const UNITS = { m: 60, h: 3600, d: 86400 };
const now = Math.floor(Date.now() / 1000);

function load() {
  return JSON.parse(chatmail.storage.get("reminders") || "[]");
}

function save(reminders) {
  chatmail.storage.set("reminders", JSON.stringify(reminders));
}

if (chatmail.event === "schedule") {
  const reminders = load();
  const due = reminders.filter((r) => r.at <= now);
  for (const r of due) {
    chatmail.send("⏰ " + r.text, r.to);
  }
  if (due.length > 0) save(reminders.filter((r) => r.at > now));
} else if (chatmail.event === "message" && chatmail.chat === "single") {
  const text = chatmail.text.trim();
  const remind = /^\/remind\s+(\d+)\s*([mhd])\s+(.+)$/s.exec(text);
  if (remind) {
    const seconds = Number(remind[1]) * UNITS[remind[2]];
    const reminders = load().filter((r) => r.at > now - 86400);
    if (reminders.filter((r) => r.to === chatmail.sender).length >= 10) {
      chatmail.reply("You have 10 reminders pending already.");
    } else {
      reminders.push({ to: chatmail.sender, at: now + seconds, text: remind[3] });
      save(reminders);
      chatmail.reply(`OK, in ${remind[1]}${remind[2]} (give or take five minutes).`);
    }
  } else if (text === "/list") {
    const mine = load().filter((r) => r.to === chatmail.sender);
    const lines = mine.map((r) => `in ${Math.max(1, Math.round((r.at - now) / 60))} min: ${r.text}`);
    chatmail.reply(lines.length > 0 ? lines.join("\n") : "No reminders pending.");
  } else {
    chatmail.reply("Send /remind 10m TEXT (m, h or d) and I write back then. /list shows what is pending.");
  }
}

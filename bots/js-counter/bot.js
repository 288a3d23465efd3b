// The counter bot in JavaScript: counts the messages it got in its storage
// (bot.toml asks for `storage = "1K"`) and answers each with the count.

if (chatmail.event === "message") {
  const count = Number(chatmail.storage.get("count") || "0") + 1;
  chatmail.storage.set("count", String(count));
  chatmail.reply("message number " + count);
}

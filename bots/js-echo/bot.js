// The echo bot in JavaScript: answers every message with its text, in the
// same chat, and every webxdc status update with an update carrying it
// back. `/delete`, quoting one of its messages, deletes that message.
// (The same behaviour as the Rust echo bot in bots/echo.)

if (chatmail.event === "webxdc-update") {
  const update = JSON.parse(chatmail.text);
  if (chatmail.webxdcInstance && typeof update === "object" && update !== null) {
    chatmail.webxdcUpdate(chatmail.webxdcInstance, { echo: update });
  }
} else if (chatmail.event === "message") {
  const text = chatmail.text.trim();
  if (text === "/delete" && chatmail.inReplyTo) {
    chatmail.delete(chatmail.inReplyTo);
  } else if (text !== "") {
    // In a group, the bot first accepts the invitation (again does no harm).
    if (chatmail.chat !== "single") chatmail.accept();
    chatmail.reply("echo: " + text);
  }
}

// The `chatmail` API of bot.js, built before the bot's script runs. It only
// turns calls into action lines (the same JSON lines a WebAssembly bot
// prints), which the relay checks as always: a script gains no power here.
// `host` holds the engine's native functions; `input` the message and its
// context. Everything the API needs is captured now, so a script that
// replaces JSON, String or Object afterwards cannot change what it does.
(function (host, input) {
  "use strict";
  const stringify = JSON.stringify;
  const freeze = Object.freeze;
  const isArray = Array.isArray;
  const emit = host.emit;

  function text(fn, name, value) {
    if (typeof value !== "string") {
      throw new TypeError(`chatmail.${fn}: ${name} must be a string, not ${value === null ? "null" : typeof value}`);
    }
    return value;
  }

  function file(fn, options) {
    if (options === undefined || options === null) return undefined;
    if (typeof options !== "object") throw new TypeError(`chatmail.${fn}: options must be an object`);
    const f = options.file;
    if (f === undefined || f === null) return undefined;
    if (typeof f !== "object") throw new TypeError(`chatmail.${fn}: options.file must be {name, text} or {name, base64}`);
    const name = text(fn, "options.file.name", f.name);
    if (typeof f.base64 === "string") return { name, base64: f.base64 };
    if (typeof f.text === "string") return { name, base64: host.base64(f.text) };
    throw new TypeError(`chatmail.${fn}: options.file needs text or base64 (a string)`);
  }

  function action(fields) {
    emit(stringify(fields));
  }

  function show(value) {
    if (typeof value === "string") return value;
    if (value instanceof Error) return `${value.name}: ${value.message}`;
    if (typeof value === "object" && value !== null) {
      try {
        return stringify(value);
      } catch (e) {
        return String(value);
      }
    }
    return String(value);
  }

  function key(fn, value) {
    text(fn, "key", value);
    if (!/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/.test(value)) {
      throw new TypeError(`chatmail.${fn}: key ${stringify(value)} must be 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'`);
    }
    return value;
  }

  const storage = freeze({
    get(k) {
      return host.storageGet(key("storage.get", k));
    },
    set(k, value) {
      key("storage.set", k);
      host.storageSet(k, text("storage.set", "value", value));
    },
    remove(k) {
      host.storageRemove(key("storage.remove", k));
    },
    keys() {
      return host.storageKeys();
    },
  });

  const api = {
    event: input.event,
    text: input.text,
    sender: input.sender,
    verified: input.verified,
    chat: input.chat,
    chatName: input.chatName,
    messageId: input.messageId,
    inReplyTo: input.inReplyTo,
    attachment: input.attachment ? freeze(input.attachment) : null,
    webxdcInstance: input.webxdcInstance,
    reply(body, options) {
      const fields = { action: "reply", text: text("reply", "text", body) };
      const f = file("reply", options);
      if (f) fields.file = f;
      action(fields);
    },
    send(body, to, options) {
      const fields = { action: "send", text: text("send", "text", body), to: to === undefined ? "chat" : text("send", "to", to) };
      const f = file("send", options);
      if (f) fields.file = f;
      action(fields);
    },
    accept() {
      action({ action: "accept" });
    },
    delete(messageId) {
      action({ action: "delete", message_id: text("delete", "messageId", messageId) });
    },
    webxdcUpdate(instance, update) {
      text("webxdcUpdate", "instance", instance);
      if (typeof update !== "object" || update === null || isArray(update)) {
        throw new TypeError("chatmail.webxdcUpdate: update must be an object");
      }
      action({ action: "webxdc-update", instance, update });
    },
    addMember(contact) {
      action({ action: "add-member", contact: text("addMember", "contact", contact) });
    },
    storage,
    fetch(url) {
      const answer = host.fetch(text("fetch", "url", url));
      return freeze({ status: answer.status, body: answer.body });
    },
  };
  Object.defineProperty(globalThis, "chatmail", { value: freeze(api), enumerable: true });

  const log = (...args) => host.log(args.map(show).join(" "));
  Object.defineProperty(globalThis, "console", { value: freeze({ log, info: log, warn: log, error: log, debug: log }), enumerable: true });
});

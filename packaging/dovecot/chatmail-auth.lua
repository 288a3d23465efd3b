-- chatmail-auth for Dovecot 2.4 (Debian 13), which has no dict passdb:
-- Dovecot's Lua passdb/userdb (package dovecot-auth-lua) asks chatmail-auth
-- the same questions the dict passdb/userdb asks on Dovecot 2.3, over the
-- same socket and protocol. Every decision (accounts made on first login,
-- password checks, the per-IP limit, nocreate, the session limit) stays in
-- chatmail-auth; this file only carries questions and answers.
--
-- One file, three uses, chosen by `lua_settings { mode = ... }`:
--   login     the password check (auth_password_verify); answers carry the
--             userdb fields for `userdb prefetch`
--   sessions  the per-account session limit, for a `deny = yes` passdb:
--             "unknown" lets the login through, OK refuses it with a reason
--   userdb    the user lookup of LMTP deliveries
-- and `socket = PATH` (default /run/chatmail-auth/auth.sock).
--
-- Auth runs Lua in auth-worker processes (one request at a time each), so
-- the blocking socket calls below hold up nobody else.

local unix = require("socket.unix")
local auth = dovecot.auth

local socket_path = "/run/chatmail-auth/auth.sock"
local mode = "login"
-- Creating an account hashes a password: seconds, not minutes.
local TIMEOUT_SECONDS = 20
-- chatmail-auth answers these found values as Dovecot field lists (not JSON).
local HELLO = "H4\t0\t0\t\tchatmail-lua\n"

function script_init(args)
  if args.socket ~= nil and args.socket ~= "" then
    socket_path = args.socket
  end
  if args.mode ~= nil and args.mode ~= "" then
    mode = args.mode
  end
  if mode ~= "login" and mode ~= "sessions" and mode ~= "userdb" then
    error("chatmail-auth.lua: lua_settings mode must be login, sessions or userdb, not " .. mode)
  end
  return 0
end

-- Looks `key` up for `user`: "found" and a table of fields, "unknown", or
-- "failed" and the problem.
local function lookup(key, user)
  local conn = (unix.stream or unix)()
  conn:settimeout(TIMEOUT_SECONDS)
  local ok, err = conn:connect(socket_path)
  if not ok then
    conn:close()
    return "failed", "connecting to chatmail-auth at " .. socket_path .. ": " .. tostring(err)
  end
  ok, err = conn:send(HELLO .. "L" .. dovecot.tabescape(key) .. "\t" .. dovecot.tabescape(user) .. "\n")
  local line
  if ok then
    line, err = conn:receive("*l")
  end
  conn:close()
  if line == nil then
    return "failed", "talking to chatmail-auth at " .. socket_path .. ": " .. tostring(err)
  end
  local kind, value = line:sub(1, 1), line:sub(2)
  if kind == "N" then
    return "unknown"
  elseif kind == "O" then
    local fields = {}
    for _, field in ipairs(dovecot.split_tabescaped(dovecot.tabunescape(value))) do
      local name, field_value = field:match("^([^=]+)=(.*)$")
      if name ~= nil then
        fields[name] = field_value
      end
    end
    return "found", fields
  end
  return "failed", "chatmail-auth: " .. dovecot.tabunescape(value)
end

-- Dovecot's answer to a lookup's outcome: `ok` with the fields, `unknown`,
-- or `failure` with the problem (the fields of a failure are its text).
local function answer(ok, unknown, failure, outcome, fields)
  if outcome == "found" then
    return ok, fields
  elseif outcome == "unknown" then
    return unknown, nil
  end
  return failure, fields
end

-- A request variable, empty when the client did not give it (Postfix's
-- SASL requests carry no session id, local ones no remote address).
local function var(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

function auth_password_verify(req, password)
  if mode == "sessions" then
    -- The key ends with the session id, so nothing ever caches it.
    local key = "shared/sessions/" .. var(req.protocol) .. "/" .. req.user .. "/" .. var(req.session)
    return answer(auth.PASSDB_RESULT_OK, auth.PASSDB_RESULT_USER_UNKNOWN, auth.PASSDB_RESULT_INTERNAL_FAILURE,
      lookup(key, req.user))
  end
  local outcome, fields = lookup("shared/passdb/" .. var(req.remote_ip) .. "/" .. req.user .. "/" .. password, req.user)
  if outcome == "found" then
    -- chatmail-auth answers with the password to compare: the one given
    -- ({PLAIN}, when it checked it or made the account with it), or the
    -- stored hash when it did not match (as Dovecot 2.3's dict passdb
    -- compares it).
    local stored = fields.password or ""
    fields.password = nil
    if stored:sub(1, 1) ~= "{" then
      stored = "{SHA512-CRYPT}" .. stored
    end
    local verdict, err = req:password_verify(stored, password)
    if verdict == 1 then
      return auth.PASSDB_RESULT_OK, fields
    elseif verdict == 0 then
      return auth.PASSDB_RESULT_PASSWORD_MISMATCH, nil
    end
    return auth.PASSDB_RESULT_INTERNAL_FAILURE, "comparing the password: " .. tostring(err)
  elseif outcome == "unknown" then
    return auth.PASSDB_RESULT_PASSWORD_MISMATCH, nil
  end
  return auth.PASSDB_RESULT_INTERNAL_FAILURE, fields
end

-- Mechanisms other than PLAIN and LOGIN (not offered by the relay).
function auth_passdb_lookup(req)
  return auth.PASSDB_RESULT_INTERNAL_FAILURE, "chatmail-auth.lua: only PLAIN and LOGIN logins are supported"
end

-- The login passdb's answers are cached per user and client address: the
-- cache stores a hash of the password that succeeded, so another password
-- gets a real lookup (as with the dict passdb's key on Dovecot 2.3). The
-- sessions passdb is configured with use_cache = no.
function auth_passdb_get_cache_key()
  return "%{user}\t%{remote_ip}"
end

function auth_userdb_lookup(req)
  return answer(auth.USERDB_RESULT_OK, auth.USERDB_RESULT_USER_UNKNOWN, auth.USERDB_RESULT_INTERNAL_FAILURE,
    lookup("shared/userdb/" .. req.user, req.user))
end

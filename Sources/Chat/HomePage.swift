/// The chat page: messages from every tab appear in the log, which scrolls;
/// it says when the connection is lost and reconnects.
let homePage = """
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Chat</title>
<style>
html, body { height: 100%; margin: 0; font-family: sans-serif; background: #eee; }
#log { position: absolute; top: 0.5em; left: 0.5em; right: 0.5em; bottom: 3em; overflow: auto;
       background: white; padding: 0.5em; }
#log div { white-space: pre-wrap; }
#log .status { color: #888; font-style: italic; }
#form { position: absolute; bottom: 0.5em; left: 0.5em; right: 0.5em; display: flex; gap: 0.5em; }
#msg { flex: 1; }
</style>
</head>
<body>
<div id="log"></div>
<form id="form"><input type="text" id="msg" autocomplete="off" autofocus><input type="submit" value="Send"></form>
<script>
const log = document.getElementById("log");
const msg = document.getElementById("msg");
let conn = null;
function append(text, cls) {
  const atBottom = log.scrollTop > log.scrollHeight - log.clientHeight - 1;
  const d = document.createElement("div");
  if (cls) d.className = cls;
  d.innerText = text;
  log.appendChild(d);
  if (atBottom) log.scrollTop = log.scrollHeight - log.clientHeight;
}
function connect() {
  const proto = location.protocol === "https:" ? "wss://" : "ws://";
  conn = new WebSocket(proto + location.host + "/ws");
  conn.onopen = () => append("Connected.", "status");
  conn.onclose = () => { append("Connection lost; reconnecting...", "status"); setTimeout(connect, 1000); };
  conn.onmessage = (e) => { for (const line of e.data.split("\\n")) append(line); };
}
document.getElementById("form").onsubmit = (e) => {
  e.preventDefault();
  if (!conn || conn.readyState !== WebSocket.OPEN || !msg.value) return;
  conn.send(msg.value);
  msg.value = "";
};
connect();
</script>
</body>
</html>
"""

"""The page ``GET /`` serves: a chat box that reads ``POST /chat``'s event stream with fetch
(``EventSource`` can only GET)."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>agentledger travel desk</title>
<style>
 body { font: 15px system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; }
 .user { font-weight: 600; margin-top: 1rem; } .tool { color: #666; font-size: 13px; }
 .answer { white-space: pre-wrap; } pre { background: #f4f4f4; padding: .5rem; }
</style></head>
<body>
<h1>Travel desk</h1>
<p>Try "What's the weather in Paris?", then "Should I pack an umbrella there?"</p>
<div id="log"></div>
<form id="form"><input id="message" size="50" autofocus> <button>Send</button></form>
<script>
let conversation = null;
const log = document.getElementById("log");
function line(cls, text) {
  const div = document.createElement("div"); div.className = cls; div.textContent = text;
  log.appendChild(div); return div;
}
async function send(message) {
  line("user", message);
  const answer = line("answer", "");
  const pieces = new Map();  // call id -> its text so far; a failed call's is dropped
  const show = () => { answer.textContent = [...pieces.values()].join(""); };
  const response = await fetch("/chat", {method: "POST",
    headers: {"content-type": "application/json"},
    body: JSON.stringify({message, conversation_id: conversation})});
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\\n\\n")) >= 0) {
      const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
      const name = (block.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((block.match(/^data: (.*)$/m) || [])[1]);
      if (name === "conversation") conversation = data.conversation_id;
      if (name === "delta") {
        pieces.set(data.call_id, (pieces.get(data.call_id) || "") + data.text); show();
      }
      if (name === "discard") { pieces.delete(data.call_id); show(); }
      if (name === "tool") line("tool", data.phase === "call"
        ? `calls ${data.tool}(${JSON.stringify(data.arguments)})`
        : `${data.tool} -> ${JSON.stringify(data.result ?? data.error)}`);
      if (name === "answer") {
        if (data.value) answer.textContent = data.value.reply;
        const pre = document.createElement("pre");
        pre.textContent = JSON.stringify(data.value, null, 1) + "\\nrun " + data.run_id;
        log.appendChild(pre);
      }
      if (name === "error" || (name === "answer" && data.error))
        line("tool", "error: " + data.error);
    }
  }
}
document.getElementById("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = document.getElementById("message");
  if (input.value) { send(input.value); input.value = ""; }
});
</script>
</body></html>
"""

"""The HTML page ``GET /debug`` serves: one self-contained document, its style and script inline.

It shows ``/debug/actors`` and refreshes it every 2 s. It holds no secret and no data: the script
reads ``?token=`` from the page's own address, sends it on as a bearer header when it fetches
``/debug/actors``, and renders what comes back with ``textContent``, never as HTML. Each answer
gets a fresh nonce; the Content-Security-Policy lets only the script and style carrying it run,
and lets the page connect only to this server. Who may load the page is decided in
`web.debug_routes`.
"""

from __future__ import annotations

import secrets

from quart import Response


def page_response() -> Response:
    """The page with a fresh nonce, and the headers that confine it."""
    nonce = secrets.token_urlsafe(16)
    response = Response(_PAGE.replace("{nonce}", nonce), content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>actorchat: actors</title>
<style nonce="{nonce}">
body { font: 13px/1.4 system-ui, sans-serif; margin: 1em; color: #222; }
table { border-collapse: collapse; margin-top: .5em; }
th, td { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left;
         white-space: nowrap; }
td.num, th.num { text-align: right; }
#status { color: #666; }
#status.error { color: #b00; }
#totals td:first-child { color: #555; }
form { margin: .5em 0; }
</style>
</head>
<body>
<h1>actorchat actors</h1>
<form id="filters">
  kind <input id="kind" size="10">
  state <select id="state"><option value="">any</option><option>idle</option>
  <option>busy</option><option>stopping</option></select>
  limit <input id="limit" type="number" min="0" max="10000" value="100">
</form>
<div id="status">loading...</div>
<h2>Totals</h2>
<table id="totals"><tbody></tbody></table>
<h2>Actors</h2>
<table id="actors">
<thead><tr><th>kind</th><th>key</th><th>state</th><th class="num">mailbox</th>
<th class="num">handled</th><th class="num">errors</th><th class="num">restarts</th>
<th>started</th><th>last active</th><th>activity</th></tr></thead>
<tbody></tbody>
</table>
<script nonce="{nonce}">
"use strict";
const token = new URLSearchParams(location.search).get("token");
const numeric = new Set(["mailbox", "handled", "errors", "restarts"]);

function row(cells, names) {
  const tr = document.createElement("tr");
  cells.forEach((value, index) => {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "" : String(value);
    if (names && numeric.has(names[index])) td.className = "num";
    tr.appendChild(td);
  });
  return tr;
}

function flatten(prefix, value, out) {
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 0) out.push([prefix, "-"]);
    for (const key of keys) flatten(prefix ? prefix + "." + key : key, value[key], out);
  } else {
    out.push([prefix, value]);
  }
  return out;
}

function render(body) {
  const names = ["kind", "key", "state", "mailbox", "handled", "errors", "restarts",
                 "started", "last_active", "activity"];
  const rows = body.actors.map((a) => row([
    a.kind, a.key, a.state, a.mailbox_depth + "/" + a.mailbox_capacity, a.handled, a.errors,
    a.restarts, a.started, a.last_active, a.activity], names));
  document.querySelector("#actors tbody").replaceChildren(...rows);
  const totals = flatten("", body.totals, []).map((pair) => row(pair));
  document.querySelector("#totals tbody").replaceChildren(...totals);
  return "showing " + body.actors.length + " of " + body.matched + " matching actors";
}

async function refresh() {
  const status = document.getElementById("status");
  const query = new URLSearchParams();
  for (const name of ["kind", "state", "limit"]) {
    const value = document.getElementById(name).value.trim();
    if (value) query.set(name, value);
  }
  const headers = token ? {"Authorization": "Bearer " + token} : {};
  try {
    const response = await fetch("/debug/actors?" + query, {headers, cache: "no-store"});
    const body = await response.json();
    if (!response.ok) throw new Error(response.status + ": " + body.error.message);
    status.textContent = render(body) + "; updated " + new Date().toLocaleTimeString();
    status.className = "";
  } catch (error) {
    status.textContent = "refresh failed: " + error.message;
    status.className = "error";
  } finally {
    setTimeout(refresh, 2000);
  }
}

document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
});
refresh();
</script>
</body>
</html>
"""

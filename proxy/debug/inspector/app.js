// authproxy inspector: polls the admin JSON APIs and renders them with DOM calls only
// (text nodes, never markup), since header values come from any local client.
"use strict";

(() => {
  const POLL_MS = 1000;
  const CREDENTIALS_MS = 3000;
  const KEEP = 500; // exchanges kept in the page

  const state = {
    exchanges: [], // newest first
    cursor: 0, // the largest exchange id seen: polls ask for newer ones only
    selected: null,
    paused: false,
    polling: false,
    again: false,
    generation: 0, // bumped when the filters change, so a late answer is dropped
    endpoints: new Set(),
    websockets: new Map(), // id -> the latest record of a WebSocket (its numbers move)
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else if (key === "title") node.title = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // --- formatting ----------------------------------------------------------------------------

  function humanDelta(seconds) {
    let s = Math.floor(Math.abs(seconds));
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    const parts = [[d, "d"], [h, "h"], [m, "m"]].filter(([n]) => n).map(([n, u]) => n + u);
    if (!parts.length) return (s % 60) + "s";
    if (!d && !h && m && s % 60) parts.push((s % 60) + "s");
    return parts.join(" ");
  }

  function expiresText(expSeconds) {
    const delta = expSeconds - Date.now() / 1000;
    return delta > 0 ? "expires in " + humanDelta(delta) : "EXPIRED " + humanDelta(delta) + " ago";
  }

  function sinceText(seconds) {
    const delta = seconds - Date.now() / 1000;
    return delta <= 0 ? humanDelta(delta) + " ago" : "in " + humanDelta(delta);
  }

  function clock(epochSeconds) {
    const d = new Date(epochSeconds * 1000);
    const pad = (n, w = 2) => String(n).padStart(w, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.` +
      pad(d.getMilliseconds(), 3);
  }

  function dateTime(epochSeconds) {
    return new Date(epochSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  const ms = (v) => (v === null || v === undefined ? "-" : v.toFixed(1) + " ms");

  function size(bytes) {
    if (bytes === null || bytes === undefined) return "-";
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KiB";
    return (bytes / 1024 / 1024).toFixed(1) + " MiB";
  }

  const statusClass = (status) => "status s" + String(status).charAt(0) + "xx";

  // A live "expires in": refreshed every second by tick().
  function countdown(expSeconds) {
    return el("span", { class: "countdown", "data-exp": expSeconds }, expiresText(expSeconds));
  }

  function tick() {
    for (const node of document.querySelectorAll("[data-exp]")) {
      const exp = Number(node.getAttribute("data-exp"));
      node.textContent = expiresText(exp);
      node.classList.toggle("expired", exp <= Date.now() / 1000);
    }
  }

  // --- exchanges -----------------------------------------------------------------------------

  function filterQuery() {
    const q = new URLSearchParams();
    const endpoint = $("f-endpoint").value;
    const status = $("f-status").value.trim();
    const text = $("f-text").value.trim();
    if (endpoint) q.set("endpoint", endpoint);
    if (status) q.set("status", status);
    if (text) q.set("q", text);
    return q;
  }

  function setLive(text, kind) {
    const live = $("live");
    live.textContent = text;
    live.className = "live " + (kind || "");
  }

  async function getJSON(url) {
    const resp = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    const body = await resp.json().catch(() => null);
    if (!resp.ok) {
      const why = body && body.message ? body.message : resp.status + " " + resp.statusText;
      throw new Error(why);
    }
    return body;
  }

  // One poll at a time: two with the same cursor would add the same exchanges twice.
  async function pollExchanges() {
    if (state.polling) {
      state.again = true;
      return;
    }
    state.polling = true;
    try {
      await pollOnce();
    } finally {
      state.polling = false;
    }
    if (state.again) {
      state.again = false;
      await pollExchanges();
    }
  }

  async function pollOnce() {
    if (state.paused) return;
    const generation = state.generation;
    const q = filterQuery();
    q.set("since", String(state.cursor));
    let data;
    try {
      data = await getJSON("api/exchanges?" + q.toString());
    } catch (e) {
      setLive("offline: " + e.message, "bad");
      return;
    }
    if (generation !== state.generation) return;
    if (data.last_id < state.cursor) { // the proxy restarted: start over
      resetExchanges();
      state.again = true;
      return;
    }
    state.cursor = data.last_id;
    for (const name of data.endpoints) state.endpoints.add(name);
    if (data.exchanges.length) {
      state.exchanges = data.exchanges.concat(state.exchanges).slice(0, KEEP);
      renderList();
    }
    renderEndpointChoices();
    setLive("live · " + clock(Date.now() / 1000).slice(0, 8), "ok");
  }

  function resetExchanges() {
    state.generation += 1;
    state.exchanges = [];
    state.cursor = 0;
    renderList();
  }

  function renderEndpointChoices() {
    const select = $("f-endpoint");
    const have = new Set(Array.from(select.options).map((o) => o.value));
    for (const name of Array.from(state.endpoints).sort()) {
      if (!have.has(name)) {
        select.append(el("option", { value: name }, name === "-" ? "- (answered by authproxy)" : name));
      }
    }
  }

  function renderList() {
    const tbody = $("exchanges").tBodies[0];
    const rows = state.exchanges.map((x) => {
      const row = el("tr", {
        "data-id": x.id, tabindex: 0,
        class: (x.id === state.selected ? "selected " : "") + (x.hint ? "has-hint" : ""),
        "aria-selected": x.id === state.selected ? "true" : "false",
      },
      el("td", { class: "mono" }, clock(x.time)),
      el("td", {}, x.method),
      el("td", { class: "mono path", title: x.path }, x.path),
      el("td", {}, x.endpoint),
      el("td", {}, el("span", { class: statusClass(x.status) }, x.status),
        x.hint ? el("span", { class: "badge hint-badge", title: x.hint }, "hint") : null,
        x.error ? el("span", { class: "badge error-badge", title: x.error }, "error") : null),
      el("td", { class: "num" }, ms(x.total_ms)),
      el("td", { class: "num" }, ms(x.upstream_ms)),
      el("td", { class: "num" }, size(x.bytes)));
      return row;
    });
    tbody.replaceChildren(...rows);
    $("empty").hidden = rows.length > 0;
    $("count").textContent = rows.length ? `(${rows.length})` : "";
  }

  function select(id) {
    state.selected = id;
    for (const row of $("exchanges").tBodies[0].rows) {
      const on = Number(row.getAttribute("data-id")) === id;
      row.classList.toggle("selected", on);
      row.setAttribute("aria-selected", on ? "true" : "false");
    }
    const x = state.websockets.get(id) || state.exchanges.find((e) => e.id === id);
    $("detail").replaceChildren(...(x ? renderDetail(x) : []));
  }

  // --- one exchange --------------------------------------------------------------------------

  function field(label, ...value) {
    return [el("dt", {}, label), el("dd", {}, ...value)];
  }

  function renderDetail(x) {
    const out = [];
    out.push(el("dl", { class: "summary" },
      field("Time", new Date(x.time * 1000).toLocaleString(), " ", el("span", { class: "muted" }, clock(x.time))),
      field("Request", el("span", { class: "mono" }, x.method + " " + x.path)),
      field("Endpoint", x.endpoint),
      field("Upstream URL", x.upstream_url ? el("span", { class: "mono" }, x.upstream_url) : "-"),
      field("Status", el("span", { class: statusClass(x.status) }, x.status),
        x.replayed ? el("span", { class: "badge" }, "replayed after a token refresh") : null),
      field("Time taken", `total ${ms(x.total_ms)}, upstream ${ms(x.upstream_ms)}`),
      field("Size", size(x.bytes)),
      field("Request id", el("span", { class: "mono" }, x.request_id || "-")),
      field("API Gateway id", el("span", { class: "mono" }, x.amzn_request_id || "-")),
      x.error ? field("Error", el("span", { class: "error" }, x.error)) : null));
    if (x.websocket) {
      out.push(el("dl", { class: "summary" },
        field("WebSocket", wsState(x.websocket)),
        field("Bytes", `up ${size(x.websocket.bytes_up)}, down ${size(x.websocket.bytes_down)}`)));
    }
    if (x.hint) {
      out.push(el("div", { class: "hint", role: "note" }, el("strong", {}, "Hint: "), x.hint));
    }
    if (x.token) out.push(renderToken(x.token));
    out.push(headerTable("Request headers as received", x.request_headers));
    if (x.sent_headers.length) out.push(headerTable("Request headers as sent upstream", x.sent_headers));
    out.push(headerTable("Response headers", x.response_headers));
    out.push(renderCurl(x.curl));
    return out;
  }

  function renderToken(token) {
    const rows = Object.entries(token.claims).map(([name, value]) => {
      const shown = Array.isArray(value) ? value.join(", ") : String(value);
      const when = typeof value === "number" && ["exp", "iat", "auth_time"].includes(name)
        ? [" ", el("span", { class: "muted" }, dateTime(value) + ", "),
          name === "exp" ? countdown(value) : el("span", {}, sinceText(value))]
        : [];
      return el("tr", {}, el("th", { class: "mono" }, name), el("td", { class: "mono" }, shown, ...when));
    });
    return el("section", { class: "token" },
      el("h3", {}, "Injected token"),
      el("p", { class: "muted" }, `${token.header}: `, el("span", { class: "mono" }, token.value),
        token.alg ? ` (${token.alg}; signature not shown)` : ""),
      el("table", { class: "claims" }, el("tbody", {}, ...rows)));
  }

  function headerTable(title, headers) {
    const rows = headers.map((h) => el("tr", { class: h.mark ? "marked mark-row-" + h.mark : "" },
      el("th", { class: "mono" }, h.name,
        h.mark ? el("span", { class: "mark mark-" + h.mark }, h.mark) : null),
      el("td", { class: "mono" }, h.value)));
    return el("section", { class: "headers" }, el("h3", {}, title),
      rows.length ? el("table", {}, el("tbody", {}, ...rows)) : el("p", { class: "muted" }, "none"));
  }

  function renderCurl(command) {
    const pre = el("pre", { class: "curl mono" }, command);
    const button = el("button", { type: "button", class: "copy" }, "Copy as curl");
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(command);
        button.textContent = "Copied";
      } catch (e) {
        const range = document.createRange(); // no clipboard access: select it for Ctrl+C
        range.selectNodeContents(pre);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        button.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => { button.textContent = "Copy as curl"; }, 2000);
    });
    return el("section", { class: "curl-box" },
      el("h3", {}, "Replay through authproxy"),
      el("p", { class: "muted" }, "The command goes to this proxy, which injects the credential again: it holds no secret."),
      button, pre);
  }

  // --- WebSockets ----------------------------------------------------------------------------

  function wsState(w) {
    if (w.open) return el("span", { class: "state state-ready" }, "open");
    const code = w.close_code ? ` (${w.close_code})` : "";
    return el("span", { class: "muted" }, `closed by ${w.closed_by || "?"}${code}`);
  }

  async function pollWebsockets() {
    let data;
    try {
      data = await getJSON("api/websockets");
    } catch (e) {
      return; // the exchanges poll reports a lost proxy
    }
    const all = data.open.concat(data.recent);
    const now = Date.now() / 1000;
    const before = state.websockets.get(state.selected);
    state.websockets = new Map(all.map((x) => [x.id, x]));
    const after = state.websockets.get(state.selected);
    if (after && JSON.stringify(after) !== JSON.stringify(before)) select(state.selected);
    $("ws-count").textContent = `(${data.open.length} open)`;
    $("ws-empty").hidden = all.length > 0;
    $("websockets").tBodies[0].replaceChildren(...all.map((x) => {
      const w = x.websocket;
      const took = (w.closed_at || now) - w.opened_at;
      return el("tr", { "data-ws": x.id, class: w.open ? "ws-open" : "" },
        el("td", {}, clock(w.opened_at)), el("td", { class: "mono" }, x.path),
        el("td", {}, x.endpoint), el("td", {}, wsState(w)),
        el("td", { class: "num" }, size(w.bytes_up)), el("td", { class: "num" }, size(w.bytes_down)),
        el("td", { class: "num" }, humanDelta(took)));
    }));
  }

  // --- credentials ---------------------------------------------------------------------------

  async function pollCredentials() {
    let data;
    try {
      data = await getJSON("api/credentials");
    } catch (e) {
      $("credentials").replaceChildren(el("p", { class: "error" }, "credentials: " + e.message));
      return;
    }
    const names = Object.keys(data).sort();
    if (!names.length) {
      $("credentials").replaceChildren(el("p", { class: "muted" }, "No endpoint uses a credential."));
      return;
    }
    $("credentials").replaceChildren(...names.map((name) => renderCredential(name, data[name])));
  }

  function renderCredential(name, c) {
    const now = Date.now() / 1000;
    const exp = c.expires_in !== null && c.expires_in !== undefined ? now + c.expires_in
      : c.token && c.token.claims && typeof c.token.claims.exp === "number" ? c.token.claims.exp : null;
    const fetches = c.fetches ? Object.entries(c.fetches).map(([k, n]) => `${k} ${n}`).join(" · ") : null;
    const rows = [
      field("Flow", Array.from(new Set([c.type, c.flow].filter(Boolean))).join(" / ") || "-"),
      field("Header", el("span", { class: "mono" }, c.header || "-"),
        c.token ? el("span", { class: "muted" }, " " + c.token.value) : null),
      c.token && c.token.claims.token_use ? field("Token", c.token.claims.token_use) : null,
      c.username ? field("User", c.username) : null,
      c.domain ? field("Signs in at", c.domain + (c.identity_provider ? " via " + c.identity_provider : "")) : null,
      exp !== null ? field("Expiry", countdown(exp)) : field("Expiry", "-"),
      c.refresh_in !== null && c.refresh_in !== undefined ? field("Refresh", "in " + humanDelta(c.refresh_in)) : null,
      fetches ? field("Fetches", fetches) : null,
      c.last_error ? field("Last error", el("span", { class: "error" }, c.last_error),
        c.last_error_at ? el("span", { class: "muted" }, " at " + c.last_error_at) : null) : null,
      c.retry_in ? field("Retry", "in " + humanDelta(c.retry_in)) : null,
    ];
    const st = c.state || (c.ready ? "ready" : "not ready");
    return el("article", { class: "card", "data-credential": name },
      el("header", {}, el("strong", {}, name), " ",
        el("span", { class: "state state-" + st.replace(/\s+/g, "-") }, st)),
      el("dl", {}, ...rows));
  }

  // --- wiring --------------------------------------------------------------------------------

  function onFilterChange() {
    resetExchanges();
    pollExchanges();
    updateHarLink();
  }

  // The HAR download takes the filters in use, so it holds what the list shows.
  function updateHarLink() {
    const q = filterQuery().toString();
    $("har").setAttribute("href", "api/exchanges.har" + (q ? "?" + q : ""));
  }

  function debounce(fn, wait) {
    let timer = null;
    return () => { clearTimeout(timer); timer = setTimeout(fn, wait); };
  }

  function start() {
    updateHarLink();
    $("f-endpoint").addEventListener("change", onFilterChange);
    $("f-status").addEventListener("input", debounce(onFilterChange, 300));
    $("f-text").addEventListener("input", debounce(onFilterChange, 300));
    $("pause").addEventListener("click", () => {
      state.paused = !state.paused;
      $("pause").textContent = state.paused ? "Resume" : "Pause";
      $("pause").setAttribute("aria-pressed", String(state.paused));
      setLive(state.paused ? "paused" : "live", state.paused ? "" : "ok");
      if (!state.paused) pollExchanges();
    });
    const tbody = $("exchanges").tBodies[0];
    const pick = (event) => {
      const row = event.target.closest("tr[data-id]");
      if (row) select(Number(row.getAttribute("data-id")));
    };
    tbody.addEventListener("click", pick);
    tbody.addEventListener("keydown", (event) => { if (event.key === "Enter") pick(event); });

    pollExchanges();
    pollCredentials();
    pollWebsockets();
    setInterval(() => { if (!document.hidden) pollWebsockets(); }, POLL_MS);
    // Polling, not a stream: nothing long-lived holds the proxy's drain at shutdown, and a
    // hidden tab costs nothing.
    setInterval(() => { if (!document.hidden) pollExchanges(); }, POLL_MS);
    setInterval(() => { if (!document.hidden) pollCredentials(); }, CREDENTIALS_MS);
    setInterval(tick, 1000);
  }

  start();
})();

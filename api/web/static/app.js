// The page at /app: the public v2 API only (docs/API.md). The access token lives in this
// module's memory; the refresh token in an HttpOnly cookie the page never sees. Every text that
// comes from a user (file names, tags, key names) is set with textContent, never as HTML.

const PAGE = 50;

const state = {
  token: null,
  refreshTimer: null,
  discovery: null,
  socket: null,
  lastEventId: 0,
  cursor: null,
  rows: new Map(), // file name -> its <tr>
  selected: new Set(),
  transfers: new Map(), // file name -> its transfer <li>
};

const $ = (id) => document.getElementById(id);

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("aria") || key === "for" || key === "role") node.setAttribute(key.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase()), value);
    else node[key] = value;
  }
  node.append(...children);
  return node;
}

function announce(message) {
  $("announce").textContent = message;
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// -- the API -------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    // The API's own words: its error, then what its details say in text.
    const details = body && body.details ? Object.values(body.details).filter((v) => typeof v === "string") : [];
    super((body && body.error ? body.error : `HTTP ${status}`) + (details.length ? `: ${details.join("; ")}` : ""));
    this.status = status;
    this.body = body;
  }
}

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

async function call(method, path, body, retried = false) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const reply = await fetch(path, init);
  if (reply.status === 401 && state.token && !retried && (await refresh())) {
    return call(method, path, body, true);
  }
  const text = await reply.text();
  const data = text ? JSON.parse(text) : null;
  if (!reply.ok) throw new ApiError(reply.status, data);
  return { data, reply };
}

async function refresh() {
  const reply = await fetch("/api/v2/auth/refresh", {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": cookie("upl_csrf") },
  });
  if (!reply.ok) return false;
  keep(await reply.json());
  return true;
}

function keep(pair) {
  state.token = pair.access_token;
  clearTimeout(state.refreshTimer);
  // A minute before the access token expires, a new one (the refresh cookie rotates too).
  const delay = Math.max(10, pair.expires_in - 60) * 1000;
  state.refreshTimer = setTimeout(() => refresh().catch(() => {}), delay);
}

// -- signing in and out ----------------------------------------------------------------------

async function signIn(username, password) {
  const { data } = await call("POST", "/api/v2/auth/token?session=cookie", { username, password });
  keep(data);
  await signedIn();
}

async function signedIn() {
  const { data: me } = await call("GET", "/api/v2/me");
  $("username").textContent = me.username;
  $("who").hidden = false;
  $("signed-out").hidden = true;
  $("signed-in").hidden = false;
  showUsage(me);
  await Promise.all([loadFiles(true), loadKeys()]);
  connectLive();
  announce(`Signed in as ${me.username}`);
}

async function signOut() {
  try {
    await call("DELETE", "/api/v2/auth/token");
  } catch (error) {
    // Signed out either way: the page forgets the token.
  }
  state.token = null;
  clearTimeout(state.refreshTimer);
  if (state.socket) state.socket.close();
  state.socket = null;
  $("file-rows").replaceChildren();
  $("transfers").replaceChildren();
  $("keys").replaceChildren();
  state.rows.clear();
  state.selected.clear();
  $("who").hidden = true;
  $("signed-in").hidden = true;
  $("signed-out").hidden = false;
  announce("Signed out");
  $("login-name").focus();
}

function showSignedOut() {
  $("register").hidden = state.discovery.registration !== "open";
  $("signed-out").hidden = false;
  $("signed-in").hidden = true;
}

// -- usage ---------------------------------------------------------------------------------

function showUsage(me) {
  const used = me.quota.used_bytes;
  const quota = me.quota.quota_bytes;
  const files = me.usage.files;
  const stored = me.usage.bytes_stored;
  $("usage-text").textContent =
    `${files} file${files === 1 ? "" : "s"}, ${size(stored)} stored; ` +
    (quota ? `${size(used)} of ${size(quota)} used` : `${size(used)} used, no quota`);
  $("usage-bar").max = quota || Math.max(used, 1);
  $("usage-bar").value = used;
}

let usageTimer = null;
function refreshUsage() {
  clearTimeout(usageTimer);
  usageTimer = setTimeout(async () => {
    try {
      showUsage((await call("GET", "/api/v2/me")).data);
    } catch (error) {
      // The next change asks again.
    }
  }, 200);
}

// -- the file list ---------------------------------------------------------------------------

function filterQuery() {
  const form = new FormData($("filters"));
  const params = new URLSearchParams();
  for (const [key, value] of form.entries()) if (value) params.append(key, value);
  params.set("limit", PAGE);
  return params;
}

async function loadFiles(reset) {
  $("list-error").textContent = "";
  const params = filterQuery();
  if (!reset && state.cursor) params.set("cursor", state.cursor);
  try {
    const { data } = await call("GET", `/api/v2/files?${params}`);
    if (reset) {
      $("file-rows").replaceChildren();
      state.rows.clear();
      state.selected.clear();
      updateSelection();
    }
    for (const file of data.items) showFile(file, false);
    state.cursor = data.next_cursor;
    $("more").hidden = !data.has_more;
    $("empty").hidden = state.rows.size > 0;
  } catch (error) {
    $("list-error").textContent = error.message;
  }
}

function showFile(file, first) {
  let row = state.rows.get(file.name);
  if (file.status === "deleted") {
    if (row) row.remove();
    state.rows.delete(file.name);
    state.selected.delete(file.name);
    updateSelection();
    $("empty").hidden = state.rows.size > 0;
    return;
  }
  const fresh = renderRow(file);
  if (row) row.replaceWith(fresh);
  else if (first) $("file-rows").prepend(fresh);
  else $("file-rows").append(fresh);
  state.rows.set(file.name, fresh);
  $("empty").hidden = true;
}

function renderRow(file) {
  const label = file.original_name;
  const check = element("input", { type: "checkbox", ariaLabel: `Select ${label}` });
  check.checked = state.selected.has(file.name);
  check.addEventListener("change", () => {
    if (check.checked) state.selected.add(file.name);
    else state.selected.delete(file.name);
    updateSelection();
  });
  const error = element("p", { class: "error", role: "alert" });
  const edit = (field, value, toPatch) => {
    const input = element("input", { value, ariaLabel: `${field} of ${label}` });
    input.dataset.field = field;
    let latest = 0; // the field's last change: an earlier one's answer, arriving later, is stale
    input.addEventListener("change", async () => {
      const change = ++latest;
      error.textContent = "";
      try {
        const { data } = await call("PATCH", `/api/v2/files/${encodeURIComponent(file.name)}`, toPatch(input.value));
        if (change !== latest) return;
        showFile(data, false);
        announce(`${field} of ${data.original_name} saved`);
      } catch (problem) {
        if (change !== latest) return;
        error.textContent = problem.message;
        input.setAttribute("aria-invalid", "true");
      }
    });
    return input;
  };
  const name = edit("Name", file.original_name, (value) => ({ original_name: value }));
  const tags = edit("Tags", file.tags.join(", "), (value) => ({ tags: splitTags(value) }));
  const category = edit("Category", file.category || "", (value) => ({ category: value.trim() || null }));
  const status = element("span", { class: `status-${file.status}`, text: file.status });
  const statusCell = element("td", {}, status);
  if (file.error) statusCell.append(element("span", { class: "reason", text: file.error }));
  const download = element("button", { type: "button", class: "quiet", text: "Download", ariaLabel: `Download ${label}` });
  download.disabled = file.status !== "stored";
  download.addEventListener("click", async () => {
    error.textContent = "";
    try {
      const { data } = await call("GET", `/api/v2/files/${encodeURIComponent(file.name)}/download`);
      window.location.assign(data.download_url);
    } catch (problem) {
      error.textContent = problem.message;
    }
  });
  const remove = element("button", { type: "button", class: "danger", text: "Delete", ariaLabel: `Delete ${label}` });
  remove.addEventListener("click", async () => {
    error.textContent = "";
    try {
      await call("DELETE", `/api/v2/files/${encodeURIComponent(file.name)}`);
      showFile({ ...file, status: "deleted" }, false);
      announce(`${label} deleted`);
      refreshUsage();
    } catch (problem) {
      error.textContent = problem.message;
    }
  });
  const row = element(
    "tr",
    {},
    element("td", {}, check),
    element("td", {}, name, error),
    statusCell,
    element("td", { text: size(file.size) }),
    element("td", {}, tags),
    element("td", {}, category),
    element("td", {}, download, " ", remove),
  );
  row.dataset.name = file.name;
  row.dataset.status = file.status;
  return row;
}

function splitTags(text) {
  return text.split(",").map((tag) => tag.trim()).filter(Boolean);
}

function updateSelection() {
  $("selected-count").textContent = `${state.selected.size} selected`;
  $("select-all").checked = state.selected.size > 0 && state.selected.size === state.rows.size;
}

async function bulk(action, extra) {
  $("bulk-error").textContent = "";
  const names = [...state.selected];
  if (!names.length) {
    $("bulk-error").textContent = "Select files first";
    return;
  }
  try {
    const { data } = await call("POST", "/api/v2/files/bulk", { action, names, ...extra });
    const failed = data.results.filter((result) => !result.ok);
    if (failed.length) $("bulk-error").textContent = failed.map((f) => `${f.name}: ${f.code}`).join("; ");
    state.selected.clear();
    announce(`${data.succeeded} file${data.succeeded === 1 ? "" : "s"} done`);
    await loadFiles(true);
    refreshUsage();
  } catch (error) {
    $("bulk-error").textContent = error.message;
  }
}

// -- uploads -----------------------------------------------------------------------------------

function transferRow(file) {
  const bar = element("progress", { max: file.size || 1, value: 0, ariaLabel: `Sending ${file.name}` });
  const status = element("span", { text: "sending" });
  const row = element("li", {}, element("span", { text: file.name }), bar, status);
  $("transfers").prepend(row);
  return { row, bar, status };
}

function send(method, url, body, headers, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open(method, url);
    for (const [name, value] of Object.entries(headers)) request.setRequestHeader(name, value);
    request.upload.addEventListener("progress", (event) => onProgress(event.loaded));
    request.addEventListener("load", () => resolve(request));
    request.addEventListener("error", () => reject(new Error("the connection failed")));
    request.send(body);
  });
}

function parsed(request) {
  try {
    return JSON.parse(request.responseText);
  } catch (error) {
    return null;
  }
}

async function upload(file) {
  const shown = transferRow(file);
  try {
    const stored = file.size > state.discovery.max_upload_size ? await uploadDirect(file, shown) : await uploadSmall(file, shown);
    shown.bar.value = file.size;
    state.transfers.set(stored.name, shown);
    setTransferStatus(stored);
    showFile(stored, true);
    refreshUsage();
  } catch (error) {
    shown.status.textContent = error.message;
    shown.status.className = "error";
    announce(`${file.name}: ${error.message}`);
  }
}

async function uploadSmall(file, shown) {
  const form = new FormData();
  form.append("file", file);
  const auth = { Authorization: `Bearer ${state.token}` };
  let request = await send("POST", "/api/v2/files", form, auth, (sent) => (shown.bar.value = sent));
  if (request.status === 401 && (await refresh())) {
    request = await send("POST", "/api/v2/files", form, { Authorization: `Bearer ${state.token}` }, (sent) => (shown.bar.value = sent));
  }
  if (request.status !== 201) throw new ApiError(request.status, parsed(request));
  return parsed(request);
}

async function uploadDirect(file, shown) {
  const { data: upload } = await call("POST", "/api/v2/uploads", { filename: file.name, size: file.size });
  const done = new Array(upload.parts.length).fill(0);
  for (const part of upload.parts) {
    const start = (part.part_number - 1) * upload.part_size;
    const headers = { ...part.headers };
    delete headers["Content-Length"]; // the browser sets it
    const request = await send("PUT", part.url, file.slice(start, start + part.size), headers, (sent) => {
      done[part.part_number - 1] = sent;
      shown.bar.value = done.reduce((a, b) => a + b, 0);
    });
    if (request.status !== 200) throw new ApiError(request.status, parsed(request));
  }
  const { data } = await call("POST", `/api/v2/uploads/${upload.upload_id}/complete`);
  return data.file;
}

function setTransferStatus(file) {
  const shown = state.transfers.get(file.name);
  if (!shown) return;
  shown.status.textContent = file.error ? `${file.status}: ${file.error}` : file.status;
  shown.status.className = `status-${file.status}`;
}

// -- live status -----------------------------------------------------------------------------------

async function connectLive() {
  if (!state.token) return;
  try {
    const { data } = await call("POST", "/api/v2/events/ticket");
    const socket = new WebSocket(`${state.discovery.ws_url}?ticket=${encodeURIComponent(data.ticket)}`);
    state.socket = socket;
    socket.addEventListener("message", (message) => onEvent(socket, JSON.parse(message.data)));
    socket.addEventListener("close", () => {
      if (state.socket === socket && state.token) setTimeout(connectLive, 2000);
    });
  } catch (error) {
    setTimeout(connectLive, 5000);
  }
}

function onEvent(socket, event) {
  if (event.type === "ready") {
    if (state.lastEventId) socket.send(JSON.stringify({ type: "resume", after: state.lastEventId }));
    else state.lastEventId = event.last_id;
    return;
  }
  if (event.type === "resync") {
    state.lastEventId = event.id;
    loadFiles(true);
    return;
  }
  if (!event.file) return;
  state.lastEventId = Math.max(state.lastEventId, event.id || 0);
  const file = event.file;
  const before = state.rows.get(file.name);
  const changed = !before || before.dataset.status !== file.status;
  if (before || event.type !== "file.deleted") showFile(file, !before);
  setTransferStatus(file);
  if (changed && event.type.startsWith("file.") && ["stored", "rejected", "failed"].includes(file.status)) {
    announce(`${file.original_name}: ${file.status}${file.error ? `, ${file.error}` : ""}`);
  }
  refreshUsage();
}

// -- API keys ------------------------------------------------------------------------------------

async function loadKeys() {
  const { data } = await call("GET", "/api/v2/keys");
  $("keys").replaceChildren(
    ...data.items.map((key) => {
      const revoke = element("button", { type: "button", class: "danger", text: "Revoke", ariaLabel: `Revoke key ${key.name}` });
      revoke.addEventListener("click", async () => {
        try {
          await call("DELETE", `/api/v2/keys/${key.id}`);
          announce(`Key ${key.name} revoked`);
          await loadKeys();
        } catch (error) {
          $("key-error").textContent = error.message;
        }
      });
      const used = key.last_used_at ? `last used ${key.last_used_at}` : "never used";
      return element("li", {}, element("strong", { text: key.name }), ` ${key.prefix}… (${key.scopes.join(", ")}; ${used}) `, revoke);
    }),
  );
}

// -- wiring ----------------------------------------------------------------------------------------

function wire() {
  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("sign-in-error").textContent = "";
    try {
      await signIn($("login-name").value, $("login-password").value);
      $("login-password").value = "";
    } catch (error) {
      $("sign-in-error").textContent = error.message;
    }
  });
  $("register").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("register-error").textContent = "";
    const account = { username: $("register-name").value, email: $("register-email").value, password: $("register-password").value };
    try {
      await call("POST", "/api/v2/users", account);
      await signIn(account.username, account.password);
      $("register-password").value = "";
    } catch (error) {
      $("register-error").textContent = error.message;
    }
  });
  $("sign-out").addEventListener("click", signOut);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadFiles(true);
  });
  $("more").addEventListener("click", () => loadFiles(false));
  $("select-all").addEventListener("change", () => {
    if ($("select-all").checked) for (const name of state.rows.keys()) state.selected.add(name);
    else state.selected.clear();
    for (const row of state.rows.values()) row.querySelector("input[type=checkbox]").checked = $("select-all").checked;
    updateSelection();
  });
  $("bulk-delete").addEventListener("click", () => bulk("delete", {}));
  $("bulk-tag").addEventListener("click", () => bulk("tag", { tags: splitTags($("bulk-tags").value) }));
  $("picker").addEventListener("change", () => {
    for (const file of $("picker").files) upload(file);
    $("picker").value = "";
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    for (const file of event.dataTransfer.files) upload(file);
  });
  $("new-key").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("key-error").textContent = "";
    try {
      const { data } = await call("POST", "/api/v2/keys", { name: $("key-name").value });
      $("key-value").textContent = data.key;
      $("key-shown").hidden = false;
      $("key-name").value = "";
      await loadKeys();
    } catch (error) {
      $("key-error").textContent = error.message;
    }
  });
  $("key-copy").addEventListener("click", async () => {
    await navigator.clipboard.writeText($("key-value").textContent);
    announce("Key copied");
  });
}

async function boot() {
  wire();
  state.discovery = (await call("GET", "/api/v2")).data;
  if (cookie("upl_csrf") && (await refresh())) {
    try {
      await signedIn();
      return;
    } catch (error) {
      state.token = null;
    }
  }
  showSignedOut();
}

boot();

// The encoder page: plain JavaScript, no build step, no other origin. It talks only to the
// `pprl encoder` process that served it; the secret file is sent to it once and never comes back.
"use strict";

const $ = (id) => document.getElementById(id);
let proposal = null; // the columns step's data
let lastCheck = null;

function show(id, visible) { $(id).classList.toggle("hidden", !visible); }

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

async function call(method, path, body, contentType) {
  const headers = { "X-PPRL-Encoder": "1" };
  if (contentType) headers["Content-Type"] = contentType;
  const response = await fetch(path, { method, headers, body, credentials: "same-origin", cache: "no-store" });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (error) { data = { error: text }; }
  if (!response.ok) {
    const problem = new Error((data && data.error) || response.statusText);
    problem.problems = (data && data.problems) || [];
    throw problem;
  }
  return data;
}

function showError(id, error) {
  const node = $(id);
  if (!error) { node.textContent = ""; show(id, false); return; }
  const problems = error.problems && error.problems.length ? "\n• " + error.problems.join("\n• ") : "";
  node.textContent = error.message + problems;
  show(id, true);
}

function renderState(state) {
  const protocol = state.protocol;
  if (protocol) {
    $("protocol-status").textContent = `${protocol.file}: “${protocol.name}” (fingerprint ${protocol.fingerprint.slice(0, 12)}…)`;
    $("protocol-status").classList.add("ok");
    const select = $("party-select");
    select.replaceChildren();
    if (!state.party) select.append(element("option", "Choose your agency…"));
    for (const party of protocol.parties) {
      const option = element("option", party.name);
      option.value = party.id;
      option.selected = party.id === state.party;
      select.append(option);
    }
    show("party-row", true);
  }
  if (state.secret) {
    $("secret-status").textContent = `${state.secret.file}: secret loaded (it stays on this computer).`;
    $("secret-status").classList.add("ok");
  }
  $("step-files").classList.toggle("done", Boolean(protocol && state.party && state.secret));
}

async function upload(path, file, name) {
  return call("PUT", `${path}?name=${encodeURIComponent(name)}`, file, "application/octet-stream");
}

async function chooseProtocol(file) {
  try {
    showError("files-error", null);
    renderState(await upload("/api/protocol", file, file.name));
    if (proposal) await loadColumns(proposal.sheet);
  } catch (error) { showError("files-error", error); }
}

async function chooseParty(party) {
  try {
    showError("files-error", null);
    renderState(await call("PUT", "/api/party", JSON.stringify({ party }), "application/json"));
    if (proposal) await loadColumns(proposal.sheet);
  } catch (error) { showError("files-error", error); }
}

async function chooseSecret(file) {
  try {
    showError("files-error", null);
    renderState(await upload("/api/secret", file, file.name));
  } catch (error) { showError("files-error", error); }
}

async function chooseClientFile(file) {
  showError("client-error", null);
  $("client-status").textContent = `Reading ${file.name}…`;
  try {
    renderColumns(await upload("/api/client-file", file, file.name));
    $("client-status").textContent = `${file.name} is ready.`;
    $("client-status").classList.add("ok");
    $("step-client").classList.add("done");
  } catch (error) {
    $("client-status").textContent = "";
    showError("client-error", error);
  }
}

async function loadColumns(sheet) {
  try {
    showError("client-error", null);
    renderColumns(await call("POST", "/api/columns", JSON.stringify({ sheet }), "application/json"));
  } catch (error) { showError("client-error", error); }
}

const HOW = { given: "chosen by you", "same name": "same name", "usual name": "a usual name for it" };

function renderColumns(data) {
  proposal = data;
  const sheetSelect = $("sheet-select");
  sheetSelect.replaceChildren();
  for (const sheet of data.sheets) {
    const option = element("option", sheet);
    option.value = sheet;
    option.selected = sheet === data.sheet;
    sheetSelect.append(option);
  }
  show("sheet-row", data.sheets.length > 1);
  const matches = Object.fromEntries(data.proposal.matches.map((m) => [m.column, m]));
  const undecided = Object.fromEntries(data.proposal.undecided.map((u) => [u[0], u]));
  const body = $("columns-table").querySelector("tbody");
  body.replaceChildren();
  for (const column of data.columns) {
    const row = element("tr");
    row.append(element("td", column));
    const select = element("select");
    select.dataset.column = column;
    select.setAttribute("aria-label", `Your column for ${column}`);
    const none = element("option", "— choose —");
    none.value = "";
    select.append(none);
    for (const header of data.header) {
      const option = element("option", header);
      option.value = header;
      option.selected = matches[column] ? matches[column].header === header : false;
      select.append(option);
    }
    const cell = element("td");
    cell.append(select);
    row.append(cell);
    let how = matches[column] ? HOW[matches[column].how] || matches[column].how : "";
    let howClass = "";
    if (undecided[column]) {
      const candidates = undecided[column][2];
      how = `${undecided[column][1]}` + (candidates.length ? `; perhaps ${candidates.join(", ")}` : "");
      howClass = "warn";
    }
    const howCell = element("td", how, howClass);
    row.append(howCell);
    select.addEventListener("change", () => {
      howCell.textContent = select.value ? HOW.given : "";
      howCell.className = "";
      show("step-check", false);
      show("step-encode", false);
    });
    body.append(row);
  }
  show("step-columns", true);
  show("step-check", false);
  show("step-encode", false);
}

function chosenColumns() {
  const columns = {};
  for (const select of $("columns-table").querySelectorAll("select")) {
    if (select.value) columns[select.dataset.column] = select.value;
  }
  return { sheet: proposal ? proposal.sheet : null, columns };
}

async function waitForJob(onProgress) {
  for (;;) {
    const job = await call("GET", "/api/job");
    if (onProgress) onProgress(job);
    if (job.state !== "running") return job;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

function failure(job) {
  const error = new Error(job.error.error);
  error.problems = job.error.problems;
  return error;
}

async function runCheck() {
  showError("columns-error", null);
  $("check-button").disabled = true;
  $("check-status").textContent = "Checking every row…";
  try {
    await call("POST", "/api/check", JSON.stringify(chosenColumns()), "application/json");
    const job = await waitForJob((j) => {
      if (j.total) $("check-status").textContent = `Checking every row… ${Math.floor((100 * j.done) / j.total)}%`;
    });
    if (job.state === "failed") throw failure(job);
    $("check-status").textContent = "";
    renderCheck(job.result.summary);
    $("step-columns").classList.add("done");
  } catch (error) {
    $("check-status").textContent = "";
    showError("columns-error", error);
  } finally {
    $("check-button").disabled = false;
  }
}

function percent(count, rows) { return rows ? `${((100 * count) / rows).toFixed(1)}%` : "–"; }

function renderCheck(summary) {
  lastCheck = summary;
  const rejected = summary.rejected;
  $("check-headline").textContent = `${summary.rows.toLocaleString()} rows: ${summary.encodable.toLocaleString()} can be encoded`
    + (rejected ? `, ${rejected.toLocaleString()} cannot (listed below).` : ", all of them.");
  const body = $("quality-table").querySelector("tbody");
  body.replaceChildren();
  for (const q of summary.quality) {
    const row = element("tr");
    row.append(element("td", q.column));
    row.append(element("td", q.header));
    row.append(element("td", percent(q.missing, summary.rows), "number-cell"));
    const refused = element("td", q.unparsed ? `${q.unparsed}: ${q.reasons.map((r) => r[0]).join("; ")}` : "0", q.unparsed ? "bad" : "");
    row.append(refused);
    row.append(element("td", q.suspicious.map((s) => `${s[0]} ×${s[1]}`).join(", "), q.suspicious.length ? "warn" : ""));
    body.append(row);
  }
  if (summary.duplicate_ids) {
    $("duplicates").textContent = `${summary.duplicate_ids} client number(s) appear on more than one row (${summary.duplicate_rows} rows). `
      + "Every copy is left out, since we cannot know which one is right: give each client one row.";
  }
  show("duplicates", summary.duplicate_ids > 0);
  const problems = $("problems-list");
  problems.replaceChildren(...summary.problems.map((p) => element("li", p)));
  if (summary.row_problems.length) {
    for (const [reason, count] of summary.row_problems) problems.append(element("li", `whole rows: ${reason} (${count})`));
  }
  $("problems-summary").textContent = `The rows that cannot be encoded (${summary.problem_count})`;
  show("problems-box", summary.problem_count > 0);
  const head = $("preview-table").querySelector("thead");
  head.replaceChildren();
  const headRow = element("tr");
  headRow.append(element("th", summary.columns.matches.length ? "row" : ""));
  for (const match of summary.columns.matches) headRow.append(element("th", match.column));
  head.append(headRow);
  const previewBody = $("preview-table").querySelector("tbody");
  previewBody.replaceChildren();
  summary.preview.forEach((values, index) => {
    const row = element("tr");
    row.append(element("td", summary.preview_lines[index]));
    for (const value of values) row.append(element("td", value));
    previewBody.append(row);
  });
  show("on-error-box", rejected > 0);
  $("encode-hint").textContent = "";
  show("step-check", true);
  show("step-encode", false);
  $("step-check").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function runEncode() {
  const state = await call("GET", "/api/state");
  if (!state.secret || !state.party) {
    $("encode-hint").textContent = "Choose your agency and the secret file first (step 1).";
    return;
  }
  const onError = document.querySelector("input[name=on-error]:checked");
  const choice = { ...chosenColumns(), on_error: lastCheck && lastCheck.rejected && onError ? onError.value : "fail" };
  $("encode-button").disabled = true;
  show("step-encode", true);
  show("result", false);
  show("encode-problems", false);
  showError("encode-error", null);
  $("encode-progress").value = 0;
  $("encode-status").textContent = "Encoding…";
  try {
    await call("POST", "/api/encode", JSON.stringify(choice), "application/json");
    const job = await waitForJob((j) => {
      if (j.total) $("encode-progress").value = Math.floor((100 * j.done) / j.total);
    });
    if (job.state === "failed") throw failure(job);
    $("encode-progress").value = 100;
    renderResult(job.result);
  } catch (error) {
    $("encode-status").textContent = "";
    showError("encode-error", error);
  } finally {
    $("encode-button").disabled = false;
  }
}

function renderResult(result) {
  $("encode-status").textContent = `Done in ${result.seconds.toFixed(1)} s.`;
  $("encode-status").classList.add("ok");
  $("result-headline").textContent = `${result.records.toLocaleString()} clients encoded`
    + (result.rejected ? `; ${result.rejected.toLocaleString()} rows left out (see rejected.csv).` : ".");
  $("result-folder").textContent = result.folder;
  $("result-client").textContent = proposal ? proposal.file : "";
  show("result-rejected", result.files.includes("rejected.csv"));
  show("result", true);
  $("step-check").classList.add("done");
  $("step-encode").classList.add("done");
  $("step-encode").scrollIntoView({ behavior: "smooth", block: "start" });
}

function setUp() {
  $("protocol-input").addEventListener("change", (event) => { if (event.target.files[0]) chooseProtocol(event.target.files[0]); });
  $("secret-input").addEventListener("change", (event) => { if (event.target.files[0]) chooseSecret(event.target.files[0]); });
  $("party-select").addEventListener("change", (event) => { if (event.target.value) chooseParty(event.target.value); });
  $("client-input").addEventListener("change", (event) => { if (event.target.files[0]) chooseClientFile(event.target.files[0]); });
  $("sheet-select").addEventListener("change", (event) => loadColumns(event.target.value));
  $("check-button").addEventListener("click", runCheck);
  $("encode-button").addEventListener("click", runEncode);
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files[0]) chooseClientFile(event.dataTransfer.files[0]);
  });
  call("GET", "/api/state").then(renderState).catch((error) => showError("files-error", error));
}

document.addEventListener("DOMContentLoaded", setUp);

// The medcast dashboard (served by serve/dashboard.py; no build step, no dependencies).
// Reads GET /model (the card: facts, metrics, features, and the prediction form built from
// them), GET /health/ready and GET /dashboard/figures; posts the form to POST /predict (with
// ?explain=true when the card has an explainer, drawn as a waterfall of contributions); with the
// key the user types (kept in sessionStorage, sent as X-API-Key) reads GET /predictions and,
// with client keys on, authorises POST /predict.
// Every string from the server goes into the page as text (textContent), never as HTML.
// The card's fields are declared in src/medcast/card.py: this file names the card `card` and a
// feature `feature` wherever it reads them, and tests/test_card.py checks every such read
// against the declaration and against what GET /model serves.

const KEY_STORE = "medcast.apiKey";
const LOG_SPAN = 1000; // ids read for "latest predictions": the largest page of GET /predictions
const TABLE_ROWS = 20;
const HOURS = 24;
const HOUR_MS = 3600 * 1000;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
const twoDecimals = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const signedTwo = new Intl.NumberFormat(undefined, {
  minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: "exceptZero",
});
const WATERFALL_TOP = 8; // features drawn one by one, largest |contribution| first; the rest share a bar
const fmt = (v) => (typeof v === "number" ? number.format(v) : v == null ? "—" : String(v));

let card = null;
const fields = new Map(); // feature name → {feature, input, error}
let logRun = 0; // a newer log request makes the results of an older one stale

function el(tag, props = {}, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

function show(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

async function fetchJSON(url, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const response = await fetch(url, { ...options, headers, cache: "no-store" });
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON (an empty body, a proxy's error page): the status says enough
  }
  return { response, body };
}

const detailOf = (response, body) =>
  (body && typeof body.detail === "string" && body.detail) || `${response.status} ${response.statusText}`;

// ---- status and card ---------------------------------------------------------------------

async function loadStatus() {
  const pill = $("status");
  try {
    const { response, body } = await fetchJSON("/health/ready");
    pill.textContent = response.ok ? "ready" : `not ready: ${(body && body.reason) || response.status}`;
    pill.className = `pill ${response.ok ? "ok" : "bad"}`;
  } catch (error) {
    pill.textContent = `unreachable: ${error.message}`;
    pill.className = "pill bad";
  }
}

async function loadCard() {
  let response, body;
  try {
    ({ response, body } = await fetchJSON("/model"));
  } catch (error) {
    show($("card-error"), `The service is unreachable (${error.message}); retrying…`);
    setTimeout(loadCard, 3000);
    return;
  }
  if (!response.ok) {
    show($("card-error"), `No model yet: ${detailOf(response, body)}. Retrying…`);
    loadStatus();
    setTimeout(loadCard, 3000);
    return;
  }
  show($("card-error"), "");
  card = body;
  renderCard(card);
  renderForm(card);
  loadStatus();
}

function paramsText(params) {
  const entries = Object.entries(params || {});
  return entries.length ? entries.map(([k, v]) => `${k}=${fmt(v)}`).join(", ") : "—";
}

function renderCard(card) {
  $("model-name").textContent = card.name;
  document.title = `${card.name} · medcast`;
  const facts = [
    ["dataset", card.dataset],
    ["target", card.target_unit ? `${card.target} (${card.target_unit})` : card.target],
    ["model", card.model || "—"],
    ["parameters", paramsText(card.params)],
    // Cards written before 00fdf1f have no training_data_md5 (they named the git revision).
    ["training data", card.training_data_md5 ? `md5 ${card.training_data_md5.slice(0, 12)}` : "—"],
    ["served", card.serving ? `${card.serving.revision}, md5 ${card.serving.md5}` : "—"],
    ["loaded from", sourceText(card), "model-source"],
  ];
  $("card-facts").replaceChildren(
    ...facts.flatMap(([k, v, id]) => [el("dt", { text: k }), el("dd", { text: v, id })]),
  );
  renderMetrics(card.metrics || {});
  renderFeatures(card.features);
  renderSignal(card.signal);
}

function sourceText(card) {
  // Where the service loaded the model from (GET /model's serving.source). Only a registry load
  // knows a registered version and the alias it was asked for; a workspace or revision load
  // says it was not loaded from the registry rather than guess which version it matches.
  if (!card.serving || !card.serving.source) return "—";
  switch (card.serving.source.kind) {
    case "registry":
      return `${card.serving.source.name} version ${card.serving.source.version}` +
        (card.serving.source.alias ? ` (@${card.serving.source.alias})` : " (by version number)");
    case "revision":
      return `revision ${card.serving.source.revision} (not loaded from the registry)`;
    default:
      return "workspace model (not loaded from the registry)";
  }
}

function renderSignal(signal) {
  // The study's verdict on the null model (medcast.selection): when no candidate predicts
  // better than the training mean, every prediction below is the average in disguise.
  const noSignal = signal && signal.signal === false;
  show($("signal-banner"), noSignal
    ? `No candidate beats the mean: these predictions carry no information about a patient ` +
      `beyond the average. ${signal.message}.`
    : "");
}

const METRIC_LABELS = { r2: "R²", rmse: "RMSE", mae: "MAE" };
const SPLIT_LABELS = { test: "test (held out)", cv: "CV (mean ± sd)" };

function renderMetrics(metrics) {
  // {test: {r2, rmse, mae}, cv: {r2, r2_std, …}} → one row per split, one column per metric
  const splits = Object.entries(metrics).filter(([, v]) => v && typeof v === "object");
  const names = [];
  for (const [, values] of splits) {
    for (const key of Object.keys(values)) {
      const base = key.replace(/_(mean|std)$/, "");
      if (!names.includes(base)) names.push(base);
    }
  }
  const table = $("metrics");
  table.hidden = splits.length === 0;
  table.tHead.replaceChildren(
    el("tr", {}, el("th", { scope: "col", text: "split" }),
      ...names.map((n) => el("th", { scope: "col", text: METRIC_LABELS[n] || n }))),
  );
  table.tBodies[0].replaceChildren(
    ...splits.map(([split, values]) => el("tr", {},
      el("th", { scope: "row", text: SPLIT_LABELS[split] || split }),
      ...names.map((n) => {
        let text = "—";
        if (typeof values[n] === "number") text = fmt(values[n]);
        else if (typeof values[`${n}_mean`] === "number") {
          text = fmt(values[`${n}_mean`]);
          if (typeof values[`${n}_std`] === "number") text += ` ± ${fmt(values[`${n}_std`])}`;
        }
        return el("td", { class: "num", text });
      }))),
  );
}

function rangeText(lo, hi) {
  if (lo == null && hi == null) return "any";
  if (lo == null) return `≤ ${fmt(hi)}`;
  if (hi == null) return `≥ ${fmt(lo)}`;
  return `${fmt(lo)} – ${fmt(hi)}`;
}

function renderFeatures(features) {
  $("features").tBodies[0].replaceChildren(...features.map((feature) => {
    const isCategory = feature.type === "category";
    const allowed = isCategory ? feature.categories.join(", ") : rangeText(feature.min, feature.max);
    const seen = isCategory || (feature.observed_min == null && feature.observed_max == null)
      ? "—" : rangeText(feature.observed_min, feature.observed_max);
    return el("tr", {},
      el("th", { scope: "row" }, el("code", { text: feature.name })),
      el("td", { text: feature.type }),
      el("td", { text: feature.unit || "—" }),
      el("td", { text: allowed }),
      el("td", { text: seen }));
  }));
}

// ---- the prediction form ------------------------------------------------------------------

function bounds(feature) {
  const isInt = feature.type === "int";
  return {
    lo: feature.min == null ? null : isInt ? Math.ceil(feature.min) : feature.min,
    hi: feature.max == null ? null : isInt ? Math.floor(feature.max) : feature.max,
  };
}

function initialValue(feature) {
  // mid of the training range (else of the allowed range): a valid, typical patient to start from
  const { lo, hi } = bounds(feature);
  const a = feature.observed_min != null ? feature.observed_min : lo;
  const b = feature.observed_max != null ? feature.observed_max : hi;
  let v = a != null && b != null ? (a + b) / 2 : a != null ? a : b != null ? b : 0;
  v = feature.type === "int" ? Math.round(v) : Math.round(v * 100) / 100;
  if (lo != null) v = Math.max(v, lo);
  if (hi != null) v = Math.min(v, hi);
  return v;
}

function hintText(feature) {
  const optional = feature.nullable ? "; may be left blank (unknown)" : "";
  if (feature.type === "category") return `one of ${feature.categories.length}${optional}`;
  const { lo, hi } = bounds(feature);
  let text = `${feature.type === "int" ? "whole number" : "number"}, ${rangeText(lo, hi)}`;
  if (feature.observed_min != null && feature.observed_max != null) {
    text += `; training: ${rangeText(feature.observed_min, feature.observed_max)}`;
  }
  return text + optional;
}

function setFieldError(entry, message, source) {
  show(entry.error, message);
  entry.error.dataset.source = message ? source : "";
  if (message) entry.input.setAttribute("aria-invalid", "true");
  else entry.input.removeAttribute("aria-invalid");
}

function renderForm(card) {
  fields.clear();
  $("fields").replaceChildren(...card.features.map((feature, i) => {
    const id = `f-${i}`;
    let input;
    // A nullable feature may be left blank: it is sent as null and imputed by the model.
    const required = !feature.nullable;
    if (feature.type === "category") {
      const blank = feature.nullable ? [el("option", { value: "", text: "(unknown)" })] : [];
      input = el("select", { id, required },
        ...blank, ...feature.categories.map((v) => el("option", { value: v, text: v })));
      if (feature.nullable) input.value = feature.categories[0];
    } else {
      const { lo, hi } = bounds(feature);
      const isInt = feature.type === "int";
      input = el("input", {
        id, type: "number", required, min: lo, max: hi, step: isInt ? 1 : "any",
        inputmode: isInt ? "numeric" : "decimal", value: initialValue(feature),
        placeholder: feature.nullable ? "blank: unknown" : false,
      });
    }
    input.dataset.feature = feature.name;
    input.setAttribute("aria-describedby", `${id}-hint ${id}-error`);
    const error = el("p", { id: `${id}-error`, class: "field-error", "data-error-for": feature.name, hidden: true });
    const entry = { feature, input, error };
    fields.set(feature.name, entry);
    input.addEventListener("input", () => {
      input.setCustomValidity(""); // a server message holds until the value changes
      if (!error.hidden) setFieldError(entry, input.checkValidity() ? "" : input.validationMessage, "client");
    });
    const label = el("label", { for: id }, el("code", { text: feature.name }),
      feature.unit ? el("span", { class: "unit", text: ` ${feature.unit}` }) : "");
    return el("div", { class: "field" }, label, input,
      el("small", { id: `${id}-hint`, class: "hint", text: hintText(feature) }), error);
  }));
  $("predict-button").disabled = false;
}

async function onPredict(event) {
  event.preventDefault();
  if (!card) return;
  show($("form-error"), "");
  // Client side first (the Constraint Validation API: required, min, max, step), each message
  // next to its field; the browser's own wording, in the user's language.
  let firstInvalid = null;
  for (const entry of fields.values()) {
    entry.input.setCustomValidity("");
    const message = entry.input.checkValidity() ? "" : entry.input.validationMessage;
    setFieldError(entry, message, "client");
    if (message && !firstInvalid) firstInvalid = entry.input;
  }
  if (firstInvalid) {
    firstInvalid.focus();
    return;
  }
  const patient = {};
  for (const [name, { feature, input }] of fields) {
    const blank = input.value === "";
    if (blank && feature.nullable) patient[name] = null;
    else patient[name] = feature.type === "category" ? input.value : input.valueAsNumber;
  }
  const button = $("predict-button");
  button.disabled = true;
  const started = performance.now();
  try {
    // With client keys on (MEDCAST_CLIENTS_FILE) predictions need the key too.
    const key = sessionStorage.getItem(KEY_STORE);
    // The explanation comes with the prediction, in the same call, when the card has an
    // explainer; a card exported before explanations has none: no chart, no error.
    const url = card.explainer ? "/predict?explain=true" : "/predict";
    const { response, body } = await fetchJSON(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(key ? { "X-API-Key": key } : {}) },
      body: JSON.stringify(patient),
    });
    if (response.ok) renderResult(body, performance.now() - started, patient);
    else if (response.status === 401) show($("form-error"), "The service needs a client key: enter it under the prediction log (API key), then predict again.");
    else showServerError(response, body);
  } catch (error) {
    show($("form-error"), `The request failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

function showServerError(response, body) {
  // The service names the offending field ({"detail", "field"}) on a 4xx: say it next to it.
  $("result").hidden = true;
  const detail = detailOf(response, body);
  const entry = response.status < 500 && body && body.field != null ? fields.get(body.field) : undefined;
  if (entry) {
    entry.input.setCustomValidity(detail);
    setFieldError(entry, detail, "server");
    entry.input.focus();
  } else if (response.status === 429) {
    show($("form-error"), `Too many requests; try again in a moment (${detail}).`);
  } else {
    show($("form-error"), `The service refused the request: ${detail}`);
  }
}

function renderResult(out, ms, patient) {
  $("result-label").textContent = `${card.target} =`;
  $("result-value").textContent = twoDecimals.format(out.prediction);
  $("result-unit").textContent = card.target_unit || "";
  renderInterval(out.interval);
  renderExplanation(out.explanation, out.prediction, patient);
  $("result-version").textContent = out.model_version;
  $("result-request").textContent = out.request_id;
  $("result-latency").textContent = `${ms.toFixed(0)} ms`;
  $("result").hidden = false;
  if (sessionStorage.getItem(KEY_STORE)) setTimeout(loadLog, 300); // the log is written in the background
}

// The conformal interval served with the prediction, and what its level means in words.
function renderInterval(interval) {
  const box = $("result-interval");
  box.hidden = !interval;
  if (!interval) return;
  const percent = Math.round(interval.level * 100);
  const outOf = percent % 10 === 0 ? `${percent / 10} in 10` : `${percent} in 100`;
  $("interval-level").textContent = `${percent}%`;
  $("interval-lower").textContent = twoDecimals.format(interval.lower);
  $("interval-upper").textContent = twoDecimals.format(interval.upper);
  const measured = card.interval && card.interval.coverage != null
    ? ` On the held-out test patients, ${(card.interval.coverage * 100).toFixed(1)}% fell inside theirs.`
    : "";
  $("interval-meaning").textContent =
    `${percent}% means: for about ${outOf} patients like this one, the true value of ${card.target} ` +
    `falls inside this range (calibrated on the training data's cross-validation errors). ` +
    `It is a statement about many patients, not a guarantee for this one.${measured}`;
}

// ---- why this prediction: a waterfall of the contributions ----------------------------------

function waterfallSteps(explanation) {
  // One step per feature, largest |contribution| first; beyond WATERFALL_TOP the smallest share
  // one "N other features" step (never a group of one).
  const missing = new Set(explanation.missing || []);
  const margins = explanation.method === "sampling" && explanation.margin ? explanation.margin : null;
  const entries = Object.entries(explanation.contributions)
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  const alone = entries.length > WATERFALL_TOP + 1 ? entries.slice(0, WATERFALL_TOP) : entries;
  const steps = alone.map(([name, value]) => ({
    key: name, name, value, missing: missing.has(name),
    margin: margins && typeof margins[name] === "number" ? margins[name] : null,
  }));
  const rest = entries.slice(alone.length);
  if (rest.length) {
    steps.push({
      key: "(other)", name: `${rest.length} other features`, members: rest,
      value: rest.reduce((total, [, v]) => total + v, 0), missing: false, margin: null,
    });
  }
  return steps;
}

function signedText(step) {
  const text = signedTwo.format(step.value);
  return step.margin == null ? text : `${text} ± ${twoDecimals.format(step.margin)}`;
}

function renderExplanation(explanation, prediction, patient) {
  const box = $("explanation");
  box.hidden = !explanation;
  if (!explanation) {
    $("waterfall").replaceChildren();
    return;
  }
  const unit = card.target_unit ? ` ${card.target_unit}` : "";
  const base = explanation.base_value;
  const steps = waterfallSteps(explanation);
  $("explanation-reading").textContent =
    `Bars show how each of this patient's values moved the prediction from the average over ` +
    `${explanation.background_rows} training patients (${twoDecimals.format(base)}) to ` +
    `${twoDecimals.format(prediction)}${unit}; red raises it, blue lowers it.`;
  show($("explanation-sampling"), explanation.method === "sampling"
    ? "These contributions are estimated by sampling: each lies within ± its margin of the " +
      "exact value with 95% confidence."
    : "");

  // Layout: names on the left, bars in the middle, signed values on the right; one row for the
  // base value, one per step, one for the prediction.
  const width = 480, row = 22, nameW = 140, valueW = 125, top = 4;
  const left = nameW + 8, right = width - valueW - 8;
  const rows = steps.length + 2;
  const height = top + rows * row + 4;
  const ends = [base];
  for (const step of steps) ends.push(ends[ends.length - 1] + step.value);
  const lo0 = Math.min(...ends, prediction), hi0 = Math.max(...ends, prediction);
  const pad = (hi0 - lo0) * 0.04 || Math.max(Math.abs(base) * 0.01, 1);
  const lo = lo0 - pad, hi = hi0 + pad;
  const x = (v) => left + ((v - lo) / (hi - lo)) * (right - left);
  const y = (i) => top + i * row;
  const biggest = steps[0];
  const svg = el("svg:svg", {
    viewBox: `0 0 ${width} ${height}`, class: "waterfall", role: "group",
    "aria-label": `Why this prediction: from the base value ${twoDecimals.format(base)} to ` +
      `${twoDecimals.format(prediction)}${unit}` +
      (biggest ? `; the largest contribution is ${biggest.name} (${signedText(biggest)})` : "") + ".",
  });
  const label = (i, text, cls = "name") =>
    el("svg:text", { x: nameW, y: y(i) + row / 2, class: cls, text });
  const value = (i, text, cls = "value contribution") =>
    el("svg:text", { x: width - 4, y: y(i) + row / 2, class: cls, text });

  // the base value: a dashed line through every row, labelled in the first
  svg.append(el("svg:line", { x1: x(base), x2: x(base), y1: y(0) + 3, y2: y(rows) - 3, class: "base" }));
  svg.append(el("svg:g", { class: "step base-value", "data-step": "(base)" },
    el("svg:title", { text: `Base value: the average prediction over ${explanation.background_rows} training patients, ${twoDecimals.format(base)}${unit}` }),
    label(0, "base value (average)"),
    el("svg:circle", { cx: x(base), cy: y(0) + row / 2, r: 4, class: "base-dot" }),
    value(0, twoDecimals.format(base), "value total")));

  steps.forEach((step, k) => {
    const i = k + 1;
    const from = ends[k], to = ends[k + 1];
    const name = step.missing ? `${step.name} (missing)` : step.name;
    const seen = step.members
      ? step.members.map(([n, v]) => `${n} ${signedTwo.format(v)}`).join(", ")
      : `${step.name} = ${step.missing ? "missing (imputed by the model)" : fmt(patient ? patient[step.name] : null)}`;
    const moves = step.value > 0 ? "raises" : step.value < 0 ? "lowers" : "does not move";
    const g = el("svg:g", {
      class: `step ${step.value >= 0 ? "up" : "down"}`, "data-step": step.key,
    },
    el("svg:title", { text: `${seen}: ${moves} the prediction by ${signedText(step)}${unit}` }),
    label(i, name),
    el("svg:rect", {
      x: Math.min(x(from), x(to)), y: y(i) + 4, width: Math.max(Math.abs(x(to) - x(from)), 1),
      height: row - 8, class: "bar",
    }),
    value(i, signedText(step)));
    svg.append(g);
    // the connector: where this step ends, the next one starts
    svg.append(el("svg:line", { x1: x(to), x2: x(to), y1: y(i) + row - 4, y2: y(i + 1) + 4, class: "connector" }));
  });

  const last = rows - 1;
  svg.append(el("svg:g", { class: "step prediction", "data-step": "(prediction)" },
    el("svg:title", { text: `Prediction: ${twoDecimals.format(prediction)}${unit}` }),
    label(last, "prediction", "name strong"),
    el("svg:rect", {
      x: Math.min(x(base), x(prediction)), y: y(last) + 4,
      width: Math.max(Math.abs(x(prediction) - x(base)), 1), height: row - 8, class: "bar",
    }),
    value(last, twoDecimals.format(prediction), "value total")));
  $("waterfall").replaceChildren(svg);
}

// ---- the prediction log (needs the API key) -------------------------------------------------

class LogError extends Error {
  constructor(response, body) {
    super(detailOf(response, body));
    this.status = response.status;
  }
}

async function getPage(key, after, limit) {
  // {items, client}: `client` names whose rows they are when the key is a client's (a client
  // reads back its own rows only), null when it is an auditor's (every row)
  const { response, body } = await fetchJSON(`/predictions?after=${after}&limit=${limit}`, {
    headers: { "X-API-Key": key },
  });
  if (!response.ok) throw new LogError(response, body);
  return body;
}

async function latestRows(key) {
  // GET /predictions pages forward from an id, oldest first: reading the whole log to show its
  // end would cost a request per 1000 rows. Instead find the newest id with an exponential, then
  // a binary search over `after` (limit=1 probes, O(log n), correct with gaps in the ids: a
  // client's key sees its own rows only), then read the last LOG_SPAN ids in one page.
  const probe = async (after) => {
    const { items } = await getPage(key, after, 1);
    return items.length ? items[0].id : null;
  };
  const start = await getPage(key, 0, 1);
  if (!start.items.length) return start;
  const first = start.items[0].id;
  let lo = first; // invariant: the id lo exists and no id is above hi
  let hi = null;
  for (let step = LOG_SPAN; hi === null; step *= 2) {
    const id = await probe(lo + step);
    if (id === null) hi = lo + step;
    else lo = id;
  }
  while (hi - lo > LOG_SPAN / 2) {
    const mid = Math.floor((lo + hi) / 2);
    const id = await probe(mid);
    if (id === null) hi = mid;
    else lo = id;
  }
  return getPage(key, Math.max(hi - LOG_SPAN, 0), LOG_SPAN);
}

async function loadLog() {
  const key = sessionStorage.getItem(KEY_STORE);
  if (!key) return;
  const run = ++logRun;
  let page;
  try {
    page = await latestRows(key);
  } catch (error) {
    if (run !== logRun) return;
    $("log-body").hidden = true;
    if (error.status === 401) {
      sessionStorage.removeItem(KEY_STORE);
      show($("log-error"), "The key was refused (401 Unauthorized): enter it again.");
    } else {
      show($("log-error"), `Cannot read the prediction log: ${error.message}`);
    }
    return;
  }
  if (run !== logRun) return;
  show($("log-error"), "");
  renderHourly(page.items);
  renderLogTable(page.items, page.client);
  $("log-body").hidden = false;
}

function onKey(event) {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) {
    show($("log-error"), "Enter the API key (MEDCAST_API_KEY, or a client key of MEDCAST_CLIENTS_FILE).");
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  loadLog();
}

function forgetKey() {
  sessionStorage.removeItem(KEY_STORE);
  logRun++;
  $("api-key").value = "";
  $("log-body").hidden = true;
  show($("log-error"), "");
}

const pad = (n) => String(n).padStart(2, "0");
const localTime = (d) =>
  `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

function featuresText(features) {
  return Object.entries(features || {}).map(([k, v]) => `${k}=${fmt(v)}`).join(", ");
}

function renderLogTable(rows, client) {
  const newest = rows.slice(-TABLE_ROWS).reverse();
  // a client's key reads back its own rows only: say whose they are
  const whose = client == null ? "" : ` of client ${client}`;
  $("log-caption").textContent = rows.length
    ? `The newest ${newest.length} of the last ${rows.length} logged rows${whose} (a batch logs one row per patient).`
    : `No predictions logged yet${whose}.`;
  $("log-table").tBodies[0].replaceChildren(...newest.map((r) => {
    const rid = r.item ? `${r.request_id.slice(0, 12)}… #${r.item}` : `${r.request_id.slice(0, 12)}…`;
    return el("tr", { "data-request-id": r.request_id },
      el("td", { class: "nowrap", text: localTime(new Date(r.created_at)) }),
      el("td", { class: "num", text: twoDecimals.format(r.prediction) }),
      el("td", {}, el("code", { title: r.model_md5, text: r.model_md5.slice(0, 8) })),
      el("td", {}, el("code", { title: r.request_id, text: rid })),
      el("td", { class: "num nowrap", text: `${fmt(r.latency_ms)} ms` }),
      el("td", { class: "small", text: featuresText(r.features) }));
  }));
}

function renderHourly(rows) {
  const box = $("hourly");
  if (!rows.length) {
    box.replaceChildren();
    return;
  }
  // HOURS hourly buckets ending with the hour of the newest row
  const hours = rows.map((r) => Math.floor(Date.parse(r.created_at) / HOUR_MS));
  const last = Math.max(...hours);
  const counts = new Array(HOURS).fill(0);
  for (const h of hours) {
    const i = h - last + HOURS - 1;
    if (i >= 0) counts[i] += 1;
  }
  const width = 720, height = 150, top = 16, bottom = 22, gap = 3;
  const barWidth = width / HOURS;
  const peak = Math.max(...counts, 1);
  const scale = (height - top - bottom) / peak;
  const svg = el("svg:svg", {
    viewBox: `0 0 ${width} ${height}`, class: "bars", role: "img",
    "aria-label": `Predictions per hour over ${HOURS} hours; ${counts[HOURS - 1]} in the newest hour, at most ${peak} in one hour.`,
  });
  counts.forEach((n, i) => {
    const start = new Date((last - HOURS + 1 + i) * HOUR_MS);
    const x = i * barWidth + gap / 2;
    const h = n * scale;
    const y = height - bottom - h;
    svg.append(el("svg:rect", { x, y, width: barWidth - gap, height: Math.max(h, n ? 1 : 0), class: "bar" },
      el("svg:title", { text: `${pad(start.getHours())}:00–${pad((start.getHours() + 1) % 24)}:00: ${n}` })));
    if (n) svg.append(el("svg:text", { x: x + (barWidth - gap) / 2, y: y - 4, class: "count", text: n }));
    if (i % 3 === 2 || i === HOURS - 1) {
      svg.append(el("svg:text", { x: x + (barWidth - gap) / 2, y: height - 6, class: "axis", text: `${pad(start.getHours())}h` }));
    }
  });
  svg.append(el("svg:line", { x1: 0, x2: width, y1: height - bottom, y2: height - bottom, class: "baseline" }));
  box.replaceChildren(svg);
}

// ---- figures --------------------------------------------------------------------------------

async function loadFigures() {
  let list = [];
  try {
    const { response, body } = await fetchJSON("/dashboard/figures");
    if (response.ok) list = body.figures;
  } catch {
    // the figures are optional
  }
  $("figures-empty").hidden = list.length > 0;
  $("figure-list").replaceChildren(...list.map((figure) => {
    const caption = figure.name.replace(/\.png$/, "").replaceAll("_", " ");
    return el("figure", {},
      el("a", { href: figure.url }, el("img", { src: figure.url, alt: caption, loading: "lazy" })),
      el("figcaption", { text: caption }));
  }));
}

// ---- start ----------------------------------------------------------------------------------

$("predict-form").addEventListener("submit", onPredict);
$("key-form").addEventListener("submit", onKey);
$("forget-key").addEventListener("click", forgetKey);
loadCard();
loadFigures();
if (sessionStorage.getItem(KEY_STORE)) {
  $("api-key").value = sessionStorage.getItem(KEY_STORE);
  loadLog();
}

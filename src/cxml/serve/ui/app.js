// The demo page: reads /version (what model this is, what input it takes) and /examples, and
// sends what the user picks to POST /predict, the API programs use, showing its answer as is.
"use strict";

const TOP = 5;
const FACTS = [
  ["release", "Release"],
  ["model_version", "Registered version"],
  ["run_id", "MLflow run"],
  ["architecture", "Architecture"],
  ["input_shape", "Input"],
  ["classes", "Classes"],
];
const METRIC_NAMES = {
  accuracy: "Accuracy",
  f1_macro: "F1 (macro)",
  precision_macro: "Precision (macro)",
  recall_macro: "Recall (macro)",
  roc_auc: "ROC AUC",
  latency_p50_ms: "Latency p50",
  latency_p95_ms: "Latency p95",
};

function $(id) {
  return document.getElementById(id);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addFact(list, label, value) {
  const item = element("div");
  item.append(element("dt", "", label), element("dd", "", value));
  list.append(item);
}

function formatMetric(name, value) {
  if (typeof value !== "number") return String(value);
  if (name.endsWith("_ms")) return `${value.toFixed(value < 10 ? 2 : 1)} ms`;
  if (value >= 0 && value <= 1) return `${(value * 100).toFixed(1)}%`;
  return value.toPrecision(4);
}

function showModel(version) {
  const name = version.model_name || "cxml model";
  $("model-name").textContent = name;
  document.title = `${name} · cxml`;
  const facts = $("facts");
  facts.replaceChildren();
  const values = {
    ...version,
    // /version's model_version is the release record's: the registry's version, or "local".
    model_version: version.model_version === "local" ? "not registered" : version.model_version,
    input_shape: Array.isArray(version.feature_names)
      ? `${version.feature_names.length} features`
      : Array.isArray(version.input_size)
        ? version.input_size.join(" × ")
        : undefined,
    classes: Array.isArray(version.classes) ? String(version.classes.length) : undefined,
  };
  for (const [key, label] of FACTS) {
    const value = values[key];
    if (value !== undefined && value !== null && value !== "") addFact(facts, label, String(value));
  }
  const metrics = $("metrics");
  metrics.replaceChildren();
  for (const [metric, value] of Object.entries(version.metrics || {})) {
    addFact(metrics, METRIC_NAMES[metric] || metric, formatMetric(metric, value));
  }
  if (version.cxml_version) $("served-by").textContent = `cxml ${version.cxml_version}`;
}

// One place decides what input the model takes: an image panel, or a form of its features.
function chooseInput(version) {
  const takesFeatures =
    version.input === "features" ||
    (Array.isArray(version.feature_names) && version.feature_names.length > 0);
  $("features-input").hidden = !takesFeatures;
  $("image-input").hidden = takesFeatures;
  return takesFeatures ? "features" : "image";
}

function showMessage(text, className) {
  $("result").replaceChildren(element("p", className || "muted", text));
}

function showPrediction(answer, milliseconds, truth) {
  const prediction = answer.predictions[0];
  const classes = answer.classes;
  const ranked = prediction.probabilities
    .map((probability, index) => ({ name: classes[index], probability }))
    .sort((a, b) => b.probability - a.probability)
    .slice(0, TOP);
  const result = $("result");
  const top = element("p", "top-class", prediction.class);
  top.id = "top-class";
  const summary = element(
    "p",
    "muted",
    `${(ranked[0].probability * 100).toFixed(1)}% · answered in ${milliseconds.toFixed(0)} ms ` +
      `by release ${answer.release}`,
  );
  summary.id = "latency";
  const parts = [top, summary];
  if (truth !== undefined) {
    const right = truth === prediction.class;
    parts.push(
      element("p", right ? "truth-ok" : "truth-wrong", `True label: ${truth} (${right ? "right" : "wrong"})`),
    );
  }
  const bars = element("ol", "bars");
  bars.setAttribute("aria-label", `Top ${ranked.length} classes`);
  for (const { name, probability } of ranked) {
    const row = element("li");
    const percent = `${(probability * 100).toFixed(1)}%`;
    const track = element("span", "bar-track");
    const fill = element("span", "bar-fill");
    fill.style.width = `${Math.max(0, Math.min(100, probability * 100))}%`;
    track.append(fill);
    track.setAttribute("aria-hidden", "true");
    row.append(element("span", "bar-label", name), track, element("span", "bar-value", percent));
    bars.append(row);
  }
  parts.push(bars);
  result.replaceChildren(...parts);
}

let previewUrl = null;

function showPreview(blob) {
  const preview = $("preview");
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(blob);
  preview.src = previewUrl;
  preview.alt = "The image sent to the model";
  preview.hidden = false;
}

// The one request the page makes: what it sends is what /predict takes from any program.
async function askModel(init, truth, onRefusal) {
  showMessage("Asking the model…");
  const started = performance.now();
  let response;
  try {
    response = await fetch("/predict", { method: "POST", ...init });
  } catch (error) {
    showMessage(`The service did not answer: ${error.message}`, "error");
    return;
  }
  const milliseconds = performance.now() - started;
  let answer;
  try {
    answer = await response.json();
  } catch (error) {
    showMessage(`The service answered ${response.status} without JSON`, "error");
    return;
  }
  if (!response.ok) {
    onRefusal(response.status, String(answer.error));
    return;
  }
  showPrediction(answer, milliseconds, truth);
}

function predict(blob, fileName, truth) {
  showPreview(blob);
  const form = new FormData();
  form.append("images", blob, fileName);
  return askModel({ body: form }, truth, (status, message) =>
    showMessage(`The service refused the image (${status}): ${message}`, "error"),
  );
}

function setUpImageInput() {
  const input = $("image-file");
  const zone = $("drop-zone");
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (file) predict(file, file.name);
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) predict(file, file.name);
  });
}

async function loadExamples() {
  const response = await fetch("/examples");
  if (!response.ok) return [];
  const { examples } = await response.json();
  return Array.isArray(examples) ? examples : [];
}

function showImageExamples(examples) {
  const images = examples.filter((example) => typeof example.url === "string");
  if (images.length === 0) return;
  const list = $("example-list");
  for (const example of images) {
    const button = element("button");
    button.type = "button";
    button.setAttribute("aria-label", `Example ${example.name}, true label ${example.label}`);
    button.dataset.label = example.label;
    const image = element("img");
    image.src = example.url;
    image.alt = "";
    button.append(image, element("span", "", example.label));
    button.addEventListener("click", async () => {
      const image = await fetch(example.url);
      if (!image.ok) {
        showMessage(`Example ${example.name} is missing (${image.status})`, "error");
        return;
      }
      predict(await image.blob(), example.name, example.label);
    });
    const item = element("li");
    item.append(button);
    list.append(item);
  }
  $("examples").hidden = false;
}

// --- a tabular model: a form of its features ----------------------------------------------

const featureForm = {
  features: [], // [{ name, min, mean, max }] in the model's order, from /version
  rows: [], // the bundle's example rows: [{ name, label, features }]
  next: 0, // the example row the button fills in next
  truth: undefined, // the true label of the example row in the form, until a value is edited
};

function featureId(index) {
  return `feature-${index}`;
}

// Short and exact enough to retype: 6 significant digits, no float noise like 0.30000000000000004.
function formatValue(value) {
  return typeof value === "number" && Number.isFinite(value) ? String(Number(value.toPrecision(6))) : "";
}

function formatHint(value) {
  return typeof value === "number" && Number.isFinite(value) ? String(Number(value.toPrecision(4))) : "?";
}

function featureField(feature, index) {
  const id = featureId(index);
  const field = element("div", "field");
  const label = element("label", "field-label", feature.name);
  label.htmlFor = id;
  const input = element("input");
  input.type = "number";
  input.step = "any";
  input.inputMode = "decimal";
  input.id = id;
  input.name = feature.name;
  input.autocomplete = "off";
  if (feature.mean !== undefined) input.placeholder = formatValue(feature.mean);
  const hint = element("span", "hint", `${formatHint(feature.min)} – ${formatHint(feature.max)}`);
  hint.id = `${id}-hint`;
  hint.title = `Training range; mean ${formatHint(feature.mean)}`;
  const problem = element("span", "field-error");
  problem.id = `${id}-error`;
  input.setAttribute("aria-describedby", `${hint.id} ${problem.id}`);
  input.addEventListener("input", () => {
    featureForm.truth = undefined;
    clearFieldError(index);
  });
  field.append(label, input, hint, problem);
  return field;
}

function setUpFeatureForm(version, examples) {
  const described = new Map((version.features || []).map((feature) => [feature.name, feature]));
  const names = Array.isArray(version.feature_names) ? version.feature_names : [];
  featureForm.features = names.map((name) => ({ ...described.get(name), name }));
  featureForm.rows = examples.filter(
    (example) =>
      Array.isArray(example.features) && example.features.length === featureForm.features.length,
  );
  $("feature-fields").replaceChildren(...featureForm.features.map(featureField));
  $("fill-example").addEventListener("click", fillExample);
  $("features-form").addEventListener("submit", (event) => {
    event.preventDefault();
    predictFeatures();
  });
  $("result-hint").textContent =
    "Fill in the features (or an example row) and press Predict to see what the model says.";
}

function setFeatureValues(values) {
  values.forEach((value, index) => {
    $(featureId(index)).value = formatValue(value);
    clearFieldError(index);
  });
}

function fillExample() {
  const { rows } = featureForm;
  if (rows.length > 0) {
    const row = rows[featureForm.next % rows.length];
    featureForm.next += 1;
    setFeatureValues(row.features);
    featureForm.truth = row.label;
    $("fill-status").textContent =
      `Example row ${rows.indexOf(row) + 1} of ${rows.length} from the test split ` +
      `(true label: ${row.label})`;
  } else {
    setFeatureValues(featureForm.features.map((feature) => feature.mean));
    featureForm.truth = undefined;
    $("fill-status").textContent = "The training mean of each feature (this release ships no example rows)";
  }
}

function readFeatureValues() {
  // An empty field is sent as null, so the server names what is missing in its own words.
  return featureForm.features.map((_, index) => {
    const text = $(featureId(index)).value.trim();
    return text === "" ? null : Number(text);
  });
}

function clearFieldError(index) {
  $(featureId(index)).removeAttribute("aria-invalid");
  $(`${featureId(index)}-error`).textContent = "";
}

// The server quotes feature names the way Python's repr does: 'name', or "name" when it holds a '.
function namedFeatures(message) {
  const quoted = [...message.matchAll(/'([^']*)'|"([^"]*)"/g)].map((match) => match[1] ?? match[2]);
  return featureForm.features
    .map((feature, index) => (quoted.includes(feature.name) ? index : -1))
    .filter((index) => index >= 0);
}

function showFeatureRefusal(status, message) {
  showMessage(`The service refused the row (${status}): ${message}`, "error");
  const named = namedFeatures(message);
  for (const index of named) $(featureId(index)).setAttribute("aria-invalid", "true");
  if (named.length > 0) {
    $(`${featureId(named[0])}-error`).textContent = message;
    $(featureId(named[0])).focus();
  }
}

function predictFeatures() {
  featureForm.features.forEach((_, index) => clearFieldError(index));
  const body = JSON.stringify({ features: readFeatureValues() });
  const asked = askModel(
    { headers: { "content-type": "application/json" }, body },
    featureForm.truth,
    showFeatureRefusal,
  );
  // below a long form the answer may be out of sight; a refusal moves focus to its field instead
  return asked.then(() => {
    if ($("top-class")) $("result").scrollIntoView({ block: "nearest" });
  });
}

async function start() {
  let version;
  try {
    const response = await fetch("/version");
    version = await response.json();
  } catch (error) {
    showMessage(`Could not read /version: ${error.message}`, "error");
    return;
  }
  showModel(version);
  const examples = await loadExamples().catch(() => []);
  if (chooseInput(version) === "image") {
    setUpImageInput();
    showImageExamples(examples);
  } else {
    setUpFeatureForm(version, examples);
  }
  document.body.dataset.ready = "true";
}

start();

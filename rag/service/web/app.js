// The clinician page: upload an image, POST it to /v1/ask, show the cited report and the cases.
// Every text that comes from the API is set with textContent: reports are untrusted input.
"use strict";

const HEADINGS = {
  en: { findings: "Findings", impression: "Impression" },
  zh: { findings: "所见", impression: "印象" },
};
const SECTION_ORDER = ["findings", "impression"];
const EXCERPT_CHARS = 200;
const IMAGE_TYPES = ["image/png", "image/jpeg"];

const $ = (id) => document.getElementById(id);
const form = $("ask-form");
const fileInput = $("file");
const dropzone = $("dropzone");
const submitButton = $("submit");
const apiKeyBox = $("api-key-box");
const apiKeyInput = $("api-key");

let chosenFile = null;
let previewUrl = null;
let thumbnailUrls = [];  // object URLs made for thumbnails fetched with an API key
let pinnedCase = null;   // the case a click on a citation keeps highlighted

// --- choosing the image -------------------------------------------------------------------

function choose(file) {
  chosenFile = file || null;
  const preview = $("preview");
  const image = $("preview-img");
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = null;
  image.hidden = true;
  image.removeAttribute("src");
  preview.hidden = !chosenFile;
  if (!chosenFile) return;
  const drawable = IMAGE_TYPES.includes(chosenFile.type);  // DICOM: the browser cannot draw it
  $("preview-name").textContent = `${chosenFile.name} (${formatBytes(chosenFile.size)})`
    + (drawable ? "" : ": no preview in the browser");
  if (drawable) {
    previewUrl = URL.createObjectURL(chosenFile);
    image.src = previewUrl;
    image.hidden = false;
  }
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

fileInput.addEventListener("change", () => choose(fileInput.files[0]));

["dragenter", "dragover"].forEach((type) => dropzone.addEventListener(type, (event) => {
  event.preventDefault();
  dropzone.classList.add("dragging");
}));
["dragleave", "drop"].forEach((type) => dropzone.addEventListener(type, () => {
  dropzone.classList.remove("dragging");
}));
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  const files = event.dataTransfer && event.dataTransfer.files;
  if (!files || !files.length) return;
  try {
    fileInput.files = files;  // keeps the input showing what was dropped
  } catch (_) { /* older browsers: chosenFile is enough */ }
  choose(files[0]);
});

// --- asking the API -----------------------------------------------------------------------

function apiHeaders() {
  const key = apiKeyInput.value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function readError(response) {
  // the API answers {"error": ..., "status": N}; a proxy in between may answer HTML
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON */ }
  return `the server answered ${response.status} ${response.statusText}`.trim();
}

function setLoading(loading) {
  submitButton.disabled = loading;
  document.body.classList.toggle("loading", loading);
  $("results").setAttribute("aria-busy", String(loading));
  $("status").textContent = loading ? "Searching similar cases and drafting the report…" : "";
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!chosenFile && !question) {
    showError("Choose an image or type a question first.");
    return;
  }
  const data = new FormData();
  if (chosenFile) data.append("file", chosenFile, chosenFile.name);
  data.append("lang", $("lang").value);
  if (question) data.append("question", question);

  showError("");
  setLoading(true);
  try {
    const response = await fetch("/v1/ask", { method: "POST", body: data, headers: apiHeaders() });
    if (response.status === 401) {
      apiKeyBox.hidden = false;
      apiKeyInput.focus();
    }
    if (!response.ok) {
      showError(await readError(response));
      return;
    }
    render(await response.json());
  } catch (err) {
    showError(`Could not reach the server: ${err.message}`);
  } finally {
    setLoading(false);
  }
});

// --- rendering ----------------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// record id -> case number (1-based position in the grid); a linked report maps to its image
function caseNumbers(hits) {
  const numbers = new Map();
  hits.forEach((hit, i) => {
    if (!numbers.has(hit.id)) numbers.set(hit.id, i + 1);
    (hit.linked || []).forEach((linked) => {
      if (!numbers.has(linked.id)) numbers.set(linked.id, i + 1);
    });
  });
  return numbers;
}

function render(answer) {
  const hits = answer.hits || [];
  const report = answer.report || { sections: {}, warnings: [] };
  const numbers = caseNumbers(hits);
  pinnedCase = null;
  renderWarnings(report.warnings || []);
  renderReport(report, numbers);
  renderCases(hits, report.lang);
  $("results").hidden = false;
}

function renderWarnings(warnings) {
  const box = $("warnings");
  box.replaceChildren();
  warnings.forEach((text) => box.appendChild(element("p", null, text)));
  box.hidden = warnings.length === 0;
}

function renderReport(report, numbers) {
  const container = $("report");
  container.replaceChildren();
  const headings = HEADINGS[report.lang] || HEADINGS.en;
  const sections = report.sections || {};
  const names = SECTION_ORDER.filter((name) => name in sections)
    .concat(Object.keys(sections).filter((name) => !SECTION_ORDER.includes(name)));
  names.forEach((name) => {
    const sentences = sections[name] || [];
    if (!sentences.length) return;
    const section = element("section", "report-section");
    section.dataset.section = name;
    section.appendChild(element("h3", null, headings[name] || name));
    const paragraph = element("p");
    sentences.forEach((sentence) => paragraph.appendChild(renderSentence(sentence, numbers)));
    section.appendChild(paragraph);
    container.appendChild(section);
  });
  if (!container.children.length) {
    container.appendChild(element("p", "empty", "The server returned no report sentences."));
  }
}

function renderSentence(sentence, numbers) {
  const span = element("span", "sentence", sentence.text);
  const cited = [...new Set((sentence.cites || []).map((id) => numbers.get(id)))]
    .filter((n) => n !== undefined).sort((a, b) => a - b);
  cited.forEach((n) => span.appendChild(citation(n)));
  if ((sentence.cites || []).some((id) => !numbers.has(id))) {
    const missing = element("span", "cite-missing", "[?]");
    missing.title = "cites a record that is not among the retrieved cases";
    span.appendChild(missing);
  }
  if (sentence.supported === false) {
    span.classList.add("unsupported");
    span.title = (sentence.issues || []).join("; ") || "not supported by the cases it cites";
    span.appendChild(element("span", "unsupported-mark", "⚠"));
  }
  span.appendChild(document.createTextNode(" "));
  return span;
}

function citation(n) {
  const button = element("button", "cite", `[${n}]`);
  button.type = "button";
  button.dataset.n = String(n);
  button.title = `case ${n}`;
  button.addEventListener("mouseenter", () => highlight(n, false));
  button.addEventListener("focus", () => highlight(n, false));
  button.addEventListener("mouseleave", () => highlight(pinnedCase, false));
  button.addEventListener("blur", () => highlight(pinnedCase, false));
  button.addEventListener("click", () => {
    pinnedCase = n;
    highlight(n, true);
  });
  return button;
}

function highlight(n, scroll) {
  document.querySelectorAll(".case.highlight").forEach((card) => {
    card.classList.remove("highlight");
  });
  if (n === null) return;
  const card = document.querySelector(`.case[data-n="${n}"]`);
  if (!card) return;
  card.classList.add("highlight");
  if (scroll) card.scrollIntoView({ behavior: "smooth", block: "nearest" });
}

function excerpt(hit, lang) {
  let text = hit.text;
  if (!text && hit.linked && hit.linked.length) {
    const sameLang = hit.linked.find((linked) => linked.lang === lang && linked.text);
    text = (sameLang || hit.linked[0]).text;
  }
  text = (text || "").trim();
  return text.length > EXCERPT_CHARS ? `${text.slice(0, EXCERPT_CHARS).trimEnd()}…` : text;
}

function renderCases(hits, lang) {
  thumbnailUrls.forEach((url) => URL.revokeObjectURL(url));
  thumbnailUrls = [];
  const grid = $("cases");
  grid.replaceChildren();
  if (!hits.length) {
    grid.appendChild(element("p", "empty", "No similar cases found."));
    return;
  }
  hits.forEach((hit, i) => {
    const n = i + 1;
    const card = element("article", "case");
    card.id = `case-${n}`;
    card.dataset.n = String(n);
    card.dataset.id = hit.id;
    card.appendChild(thumbnail(hit));

    const title = element("div", "case-title");
    title.appendChild(element("span", "case-n", `[${n}]`));
    title.appendChild(element("span", "score", `score ${Number(hit.score).toFixed(3)}`));
    card.appendChild(title);

    const facts = element("dl", "facts");
    [["domain", hit.domain], ["kind", hit.kind], ["licence", hit.license || "not stated"]]
      .forEach(([name, value]) => {
        facts.appendChild(element("dt", null, name));
        facts.appendChild(element("dd", null, value || "—"));
      });
    card.appendChild(facts);
    card.appendChild(element("p", "excerpt", excerpt(hit, lang)));
    grid.appendChild(card);
  });
}

function thumbnail(hit) {
  if (hit.kind !== "image" || !hit.thumbnail) {
    const icon = element("div", "thumb text-icon", "¶");
    icon.setAttribute("role", "img");
    icon.setAttribute("aria-label", `${hit.kind} (text)`);
    return icon;
  }
  const image = element("img", "thumb");
  image.alt = `thumbnail of ${hit.id}`;
  image.addEventListener("error", () => image.classList.add("broken"));
  const headers = apiHeaders();
  if (!Object.keys(headers).length) {
    image.src = hit.thumbnail;
  } else {  // an <img> cannot send the X-API-Key header: fetch it and show the blob
    fetch(hit.thumbnail, { headers })
      .then((response) => (response.ok ? response.blob() : Promise.reject(response.status)))
      .then((blob) => {
        const url = URL.createObjectURL(blob);
        thumbnailUrls.push(url);
        image.src = url;
      })
      .catch(() => image.classList.add("broken"));
  }
  return image;
}

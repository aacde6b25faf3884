// The signing page: sign in with Ethereum, show the session and its evidence, sign the agreement.
// The key never leaves the page: it signs the SIWE message and the EIP-712 Agreement locally
// (ethers' Wallet); the API only relays the signatures. After sign-in the page starts (or reuses)
// the session's extraction job, shows its progress, then plays each camera's verified clips in
// time order with the verdict and the declared gaps of its report. See docs/SIGNING.md, docs/API.md.
"use strict";

const $ = (id) => document.getElementById(id);
const sessionId = new URLSearchParams(location.search).get("session");
let wallet = null;
let token = null;
let finalEvidence = null; // once every camera is anchored past the end, the evidence cannot change
let evidenceStarted = false;

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { ...options, headers });
  const body = await response.json();
  if (!response.ok) throw Object.assign(new Error(body.detail || response.statusText), { problem: body });
  return body;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  for (const values of rows) {
    const tr = document.createElement("tr");
    values.forEach((v) => cell(tr, String(v)));
    body.appendChild(tr);
  }
}

async function signIn() {
  try {
    wallet = new ethers.Wallet($("key").value.trim());
    const n = await api("/v1/auth/nonce");
    const issuedAt = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const message = `${location.host} wants you to sign in with your Ethereum account:\n${wallet.address}\n\n` +
      `Sign in to FrameLedger to sign a session\n\nURI: ${location.origin}\nVersion: 1\n` +
      `Chain ID: ${n.chainId}\nNonce: ${n.nonce}\nIssued At: ${issuedAt}`;
    const signature = await wallet.signMessage(message);
    const t = await api("/v1/auth/siwe", { method: "POST", body: JSON.stringify({ message, signature }) });
    token = t.token;
    $("who").textContent = `Signed in as ${t.address}`;
    $("error").textContent = "";
    await refresh();
    setInterval(refresh, 1000); // the risk gate can clear at any moment
    startEvidence();
  } catch (e) {
    $("error").textContent = `Sign-in failed: ${e.message}`;
  }
}

function signBlocker(s, me, evidence) {
  if (s.status !== "formed") return `The session is ${s.status}.`;
  if (s.risk.active) return `Signing is blocked: a risk warning is active for camera ${s.risk.cameraId}.`;
  if (me && me.signed) return "You have signed.";
  if (!evidence.ok) return evidence.reason;
  return "";
}

async function loadEvidence() {
  try {
    const doc = await api(`/v1/sessions/${sessionId}/agreement`);
    return { ok: true, doc };
  } catch (e) {
    return { ok: false, reason: `The evidence is not ready: ${e.message}` };
  }
}

async function refresh() {
  try {
    const s = await api(`/v1/sessions/${sessionId}`);
    $("session").hidden = false;
    $("sid").textContent = s.sessionId;
    $("status").textContent = s.status;
    $("signed").textContent = `${s.signed} of ${s.parties.length}`;
    $("doc").textContent = s.documentHash;
    $("range").textContent = `${new Date(s.startMs).toISOString()} – ${new Date(s.endMs).toISOString()}`;
    fillTable("parties", s.partyStates.map((p, i) => [p.address,
      s.cameras.filter((_, c) => s.cameraParty[c] === i).length, p.response, p.signed ? "yes" : "no"]));
    $("risk").textContent = s.risk.active ? `Risk warning active for camera ${s.risk.cameraId}` : "No risk warning.";
    $("risk").className = s.risk.active ? "active" : "";
    const evidence = finalEvidence || await loadEvidence();
    if (evidence.ok) {
      finalEvidence = evidence;
      $("root").textContent = evidence.doc.evidenceRoot;
      fillTable("blocks", evidence.doc.leaves.map(([camera, height, hash]) => [camera.slice(0, 10) + "…", height, hash]));
    }
    const me = s.partyStates.find((p) => p.address === wallet.address);
    const reason = signBlocker(s, me, evidence);
    $("sign").disabled = reason !== "";
    $("reason").textContent = reason;
  } catch (e) {
    $("error").textContent = e.message;
  }
}

async function signAgreement() {
  $("sign").disabled = true;
  try {
    const doc = await api(`/v1/sessions/${sessionId}/agreement`);
    const td = doc.typedData;
    const types = { ...td.types };
    delete types.EIP712Domain; // ethers derives the domain type itself
    const signature = await wallet.signTypedData(td.domain, types, td.message);
    await api(`/v1/sessions/${sessionId}/signatures`, {
      method: "POST", body: JSON.stringify({ evidenceRoot: doc.evidenceRoot, signature }),
    });
    $("error").textContent = "";
  } catch (e) {
    $("error").textContent = `Signing failed: ${e.message}`;
  }
  await refresh();
}

const iso = (ms) => (ms == null ? "?" : new Date(ms).toISOString().replace("T", " ").replace("Z", ""));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function startEvidence() {
  if (evidenceStarted) return;
  evidenceStarted = true;
  followEvidence().catch((e) => {
    $("evidence-status").textContent = `The verified video is not available: ${e.message}`;
  });
}

async function followEvidence() {
  $("evidence-status").textContent = "Starting the extraction…";
  let job = await api(`/v1/sessions/${sessionId}/evidence`, { method: "POST", body: "{}" });
  const bar = $("evidence-progress");
  bar.hidden = false;
  while (job.state === "queued" || job.state === "running") {
    bar.value = job.progress;
    $("evidence-status").textContent = `Extracting and verifying against the chain: ${Math.round(job.progress * 100)} % ` +
      `(camera ${job.cameraIndex + 1} of ${job.cameras.length}, ${job.phase})`;
    await sleep(500);
    job = await api(`/v1/evidence/jobs/${job.jobId}`);
  }
  bar.value = 1;
  if (job.state === "failed") throw new Error(job.error ? job.error.detail : "the extraction failed");
  $("evidence-status").textContent = `Extracted and verified: ${job.cameras.length} camera(s).`;
  showVideos(job);
}

function gapText(g) {
  const seqs = g.from_seq == null ? "" : ` (frames ${g.from_seq}–${g.to_seq})`;
  const sub = g.substitute_camera ? `, filled from camera ${g.substitute_camera.slice(0, 10)}…` : "";
  const lost = g.keyframe_lost ? ", keyframe lost" : "";
  return `${g.kind} gap ${iso(g.from_ms)} – ${iso(g.to_ms)}${seqs}${sub}${lost}`;
}

function element(tag, text, className) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  if (className) e.className = className;
  return e;
}

// One sequenced player per camera: its clips in time order, the next starting when one ends.
function player(clips) {
  const video = element("video");
  Object.assign(video, { controls: true, muted: true, preload: "auto", playsInline: true });
  const label = element("p", null, "clip");
  let current = 0;
  const load = (n) => {
    current = n;
    const c = clips[n];
    video.src = c.url;
    label.textContent = `clip ${n + 1} of ${clips.length}: ${iso(c.start_ms)} – ${iso(c.end_ms)}, ${c.frames} frames, ` +
      (c.reencoded ? `re-encoded (${c.why})` : "the camera's original packets") + (c.kind === "substituted" ? ", substituted" : "");
  };
  video.addEventListener("ended", () => {
    if (current + 1 < clips.length) {
      load(current + 1);
      video.play().catch(() => {});
    }
  });
  load(0);
  return [video, label];
}

function showVideos(job) {
  const box = $("videos");
  box.replaceChildren();
  const verdicts = [];
  for (const cam of job.cameras) {
    const section = element("section", null, "camera");
    section.dataset.camera = cam.cameraId;
    const title = element("h4", `Camera ${cam.ip || cam.cameraId}: `);
    title.appendChild(element("span", cam.verdict.replaceAll("_", " "), `verdict verdict-${cam.verdict}`));
    section.appendChild(title);
    if (cam.clips.length) section.append(...player(cam.clips));
    else section.appendChild(element("p", "No video of this camera in the session's range."));
    const gaps = element("ul", null, "gaps");
    for (const g of cam.gaps) gaps.appendChild(element("li", gapText(g)));
    if (!cam.gaps.length) gaps.appendChild(element("li", "No gaps."));
    section.appendChild(gaps);
    const links = element("p");
    const report = element("a", "verification report (JSON)");
    report.href = cam.reportUrl;
    links.appendChild(report);
    if (cam.bundleUrl) {
      const bundle = element("a", "evidence bundle (zip)");
      bundle.href = cam.bundleUrl;
      links.append(" · ", bundle);
    }
    section.appendChild(links);
    box.appendChild(section);
    verdicts.push(`${cam.ip || cam.cameraId.slice(0, 10)}: ${cam.verdict.replaceAll("_", " ")}`);
  }
  $("verdict").textContent = verdicts.join(" · ");
}

$("signin").addEventListener("click", signIn);
$("sign").addEventListener("click", signAgreement);

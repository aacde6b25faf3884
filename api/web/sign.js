// The signing page: sign in with Ethereum, show the session and its evidence, sign the agreement.
// The key never leaves the page: it signs the SIWE message and the EIP-712 Agreement locally
// (ethers' Wallet); the API only relays the signatures. See docs/SIGNING.md.
"use strict";

const $ = (id) => document.getElementById(id);
const sessionId = new URLSearchParams(location.search).get("session");
let wallet = null;
let token = null;
let finalEvidence = null; // once every camera is anchored past the end, the evidence cannot change

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

$("signin").addEventListener("click", signIn);
$("sign").addEventListener("click", signAgreement);

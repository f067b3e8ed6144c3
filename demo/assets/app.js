// The demo's page: the MJPEG <img>, /stats polled twice a second, the controls as POST /control.
// The token travels in a SameSite=Strict cookie the page's answer set, so no request here names it.
"use strict";
const view = document.getElementById("view");
const note = document.getElementById("note");
const table = document.getElementById("stats");
let state = {};

async function control(body) {
  const r = await fetch("/control", {method: "POST", headers: {"Content-Type": "application/json"},
                                     body: JSON.stringify(body)});
  const answer = await r.json();
  note.textContent = answer.error || answer.notice || "";
  return answer;
}

function row(name, value) {
  const tr = document.createElement("tr");
  for (const text of [name, value]) {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  }
  table.appendChild(tr);
}

function pct(f) {
  if (!f || f.recent_change_pct === null) return "--";
  const still = f.recent_still_change_pct === null ? "" : ` (still ${f.recent_still_change_pct.toFixed(2)}%)`;
  return `${f.recent_change_pct.toFixed(2)}%${still}`;
}

function show(s) {
  state = s;
  table.replaceChildren();
  row("FPS", s.fps.toFixed(1));
  row("frames", `${s.frames_shown} shown, ${s.frames_dropped} dropped`);
  row("model", s.backend);
  row("precision", s.precision || "-");
  for (const [stage, ms] of Object.entries(s.ms_per_stage)) if (ms !== null) row(`${stage} ms`, ms.toFixed(1));
  row("flicker", pct(s.flicker.raw));
  if (s.flicker.smoothed) row(`smoothed (${s.flicker.smooth})`, pct(s.flicker.smoothed));
  row("viewers", String(s.server.viewers));
  if (s.view.show_prior && s.view.point) row("prior of", `(${s.view.point[0]}, ${s.view.point[1]})`);
  document.getElementById("mode").value = s.view.mode;
  const alpha = document.getElementById("alpha");
  if (document.activeElement !== alpha) alpha.value = s.view.alpha;
  document.getElementById("alpha-value").textContent = s.view.alpha.toFixed(2);
  document.getElementById("pause").textContent = s.view.paused ? "resume" : "pause";
  document.getElementById("prior").disabled = !s.has_prior;
  document.getElementById("prior").title = s.has_prior ? "click the picture to pick the pixel" : s.why_no_prior;
  document.getElementById("prior").textContent = s.view.show_prior ? "prior view off" : "prior view";
  if (s.stopped) note.textContent = "the demo has stopped";
}

async function poll() {
  try {
    const r = await fetch("/stats", {cache: "no-store"});
    if (r.ok) show(await r.json());
  } catch (e) {
    note.textContent = "the demo is not answering";
  }
  setTimeout(poll, 500);
}

document.getElementById("mode").onchange = (e) => control({action: "mode", value: e.target.value});
document.getElementById("alpha").onchange = (e) => control({action: "alpha", value: Number(e.target.value)});
document.getElementById("pause").onclick = () => control({action: "pause", value: !state.view.paused});
document.getElementById("prior").onclick = () => control({action: "prior", value: !state.view.show_prior});
document.getElementById("stop").onclick = () => control({action: "stop"});

// A click picks the pixel whose context-prior row is shown: the image's own pixels (naturalWidth), not the page's.
view.onclick = (e) => {
  const box = view.getBoundingClientRect();
  const x = Math.floor((e.clientX - box.left) * view.naturalWidth / box.width);
  const y = Math.floor((e.clientY - box.top) * view.naturalHeight / box.height);
  control({action: "point", x: x, y: y});
};
poll();

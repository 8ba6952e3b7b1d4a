// cardiotwin review page: renders the scene payload built by cardiotwin/viewer/scene.py with
// three.js (bundled in static/vendor). The same code runs served (fetches api/scene.json) and
// exported (reads the inlined <script id="cardiotwin-scene">), so both render the same way.
/* global THREE */
"use strict";

(function () {
  const $ = (sel) => document.querySelector(sel);
  const SVGNS = "http://www.w3.org/2000/svg";

  // ------------------------------------------------------------------ payload decoding
  const TYPED = { float32: Float32Array, uint32: Uint32Array, uint8: Uint8Array, int32: Int32Array };
  function decode(obj) {
    if (!obj) return null;
    const bin = atob(obj.b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new TYPED[obj.dtype](bytes.buffer);
  }

  async function loadScene() {
    const inline = document.getElementById("cardiotwin-scene");
    if (inline) return JSON.parse(inline.textContent);
    const resp = await fetch("api/scene.json");
    if (!resp.ok) throw new Error("scene request failed: " + resp.status);
    return resp.json();
  }

  // ------------------------------------------------------------------ colour maps
  function mapStops(stops, t) {
    t = Math.min(1, Math.max(0, t));
    for (let i = 1; i < stops.length; i++) {
      if (t <= stops[i][0]) {
        const a = stops[i - 1], b = stops[i], u = (t - a[0]) / (b[0] - a[0] || 1);
        return [a[1] + u * (b[1] - a[1]), a[2] + u * (b[2] - a[2]), a[3] + u * (b[3] - a[3])];
      }
    }
    const l = stops[stops.length - 1];
    return [l[1], l[2], l[3]];
  }
  const lin = (c) => [c[0] ** 2.2, c[1] ** 2.2, c[2] ** 2.2];  // sRGB -> linear (vertex colours are linear)
  const css = (rgb) => `rgb(${Math.round(rgb[0] * 255)},${Math.round(rgb[1] * 255)},${Math.round(rgb[2] * 255)})`;
  function gradientCss(stops) {
    return "linear-gradient(to right," + stops.map((s) => `${css([s[1], s[2], s[3]])} ${s[0] * 100}%`).join(",") + ")";
  }

  // ------------------------------------------------------------------ state
  const S = { scene: null, field: "activation", configA: null, configB: null, compare: false,
              time: Infinity, playing: false, selected: null, panes: [], camera: null };

  function config(id) { return S.scene.configurations.find((c) => c.id === id) || null; }
  function activationRange() {
    const cs = [config(S.configA), S.compare ? config(S.configB) : null].filter(Boolean);
    if (!cs.length) return [0, 1];
    return [Math.min(...cs.map((c) => c.first_ms)), Math.max(...cs.map((c) => c.last_ms))];
  }

  // ------------------------------------------------------------------ 3D panes
  function makePane(index, sc) {
    const root = document.getElementById("pane-" + index);
    const canvas = root.querySelector("canvas");
    const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    renderer.setPixelRatio(window.devicePixelRatio || 1);
    renderer.setClearColor(0x0b0d10, 1);
    const scene = new THREE.Scene();
    scene.add(new THREE.HemisphereLight(0xffffff, 0x606070, 2.2));
    const key = new THREE.DirectionalLight(0xffffff, 1.2);
    key.position.set(1, 1, 2);
    scene.add(key);
    const pane = { index, root, canvas, renderer, scene, config: null, layers: {} };

    for (const s of sc.label_surfaces) {
      const g = new THREE.BufferGeometry();
      g.setAttribute("position", new THREE.BufferAttribute(decode(s.vertices), 3));
      g.setIndex(new THREE.BufferAttribute(decode(s.faces), 1));
      g.computeVertexNormals();
      const m = new THREE.Mesh(g, new THREE.MeshLambertMaterial({
        color: new THREE.Color().setRGB(s.colour[0] / 255, s.colour[1] / 255, s.colour[2] / 255, THREE.SRGBColorSpace),
        side: THREE.DoubleSide, transparent: true, opacity: 0.35, depthWrite: false }));
      (pane.layers.labels = pane.layers.labels || new THREE.Group()).add(m);
    }
    if (pane.layers.labels) scene.add(pane.layers.labels);

    if (sc.mesh) {
      const ref = decode(sc.mesh.vertices);
      const g = new THREE.BufferGeometry();
      g.setAttribute("position", new THREE.BufferAttribute(new Float32Array(ref), 3));
      g.setAttribute("color", new THREE.BufferAttribute(new Float32Array(ref.length), 3));
      g.setIndex(new THREE.BufferAttribute(decode(sc.mesh.faces), 1));
      g.computeVertexNormals();
      pane.refPositions = ref;
      pane.meshGeometry = g;
      pane.layers.mesh = new THREE.Mesh(g, new THREE.MeshLambertMaterial({ vertexColors: true, side: THREE.DoubleSide }));
      scene.add(pane.layers.mesh);
      const eg = new THREE.BufferGeometry();
      eg.setAttribute("position", g.getAttribute("position"));
      eg.setIndex(new THREE.BufferAttribute(decode(sc.mesh.edges), 1));
      pane.layers.edges = new THREE.LineSegments(eg, new THREE.LineBasicMaterial({ color: 0x222222, transparent: true, opacity: 0.5 }));
      scene.add(pane.layers.edges);
    }
    if (sc.fibres) {
      const g = new THREE.BufferGeometry();
      g.setAttribute("position", new THREE.BufferAttribute(decode(sc.fibres.segments), 3));
      g.setAttribute("color", new THREE.BufferAttribute(decode(sc.fibres.colours), 3, true));
      pane.layers.fibres = new THREE.LineSegments(g, new THREE.LineBasicMaterial({ vertexColors: true }));
      scene.add(pane.layers.fibres);
    }
    pane.layers.isochrones = new THREE.Group();
    scene.add(pane.layers.isochrones);
    pane.layers.candidates = new THREE.Group();
    const radius = S.sceneRadius * 0.035;
    // One marker per lead site: the best-ranked protocol there (AV/VV variants share a site).
    const bySite = new Map();
    for (const c of sc.candidates) {
      if (!c.position_mm) continue;  // a protocol without leads has no place on the heart
      const key = c.position_mm.map((v) => v.toFixed(2)).join(",");
      const prev = bySite.get(key);
      if (!prev || (c.rank ?? 1e9) < (prev.rank ?? 1e9)) bySite.set(key, c);
    }
    for (const c of bySite.values()) {
      const rgb = candidateColour(c);
      const m = new THREE.Mesh(new THREE.SphereGeometry(radius, 20, 14),
        new THREE.MeshPhongMaterial({ color: new THREE.Color().setRGB(rgb[0], rgb[1], rgb[2], THREE.SRGBColorSpace), emissive: 0x111111 }));
      m.position.set(c.position_mm[0], c.position_mm[1], c.position_mm[2]);
      m.userData.candidateId = c.id;
      m.userData.colour = rgb;
      pane.layers.candidates.add(m);
    }
    scene.add(pane.layers.candidates);

    const controls = new THREE.OrbitControls(S.camera, canvas);
    controls.target.copy(S.sceneCentre);
    controls.addEventListener("change", renderAll);
    pane.controls = controls;
    let down = null;
    canvas.addEventListener("pointerdown", (e) => { down = [e.clientX, e.clientY]; });
    canvas.addEventListener("pointerup", (e) => {
      if (down && Math.hypot(e.clientX - down[0], e.clientY - down[1]) < 4) pick(pane, e);
      down = null;
    });
    return pane;
  }

  // Predicted response -> colour, scaled over all candidates (grey when unknown).
  function candidateColour(c) {
    const sc = S.scene;
    if (!S.respRange) {
      const v = sc.candidates.map((x) => x.response).filter((r) => r !== null);
      S.respRange = v.length ? [Math.min(...v), Math.max(...v)] : [0, 1];
    }
    const [lo, hi] = S.respRange;
    return c.response === null ? [0.6, 0.6, 0.6] : mapStops(sc.colormaps.response, hi > lo ? (c.response - lo) / (hi - lo) : 1);
  }

  function pick(pane, e) {
    const r = pane.canvas.getBoundingClientRect();
    const ndc = new THREE.Vector2(((e.clientX - r.left) / r.width) * 2 - 1, -((e.clientY - r.top) / r.height) * 2 + 1);
    const ray = new THREE.Raycaster();
    ray.setFromCamera(ndc, S.camera);
    const hits = ray.intersectObjects(pane.layers.candidates.children, false);
    if (hits.length) selectCandidate(hits[0].object.userData.candidateId, { switchPane: pane.index });
  }

  function fieldColours(pane) {
    const sc = S.scene, g = pane.meshGeometry;
    if (!g) return;
    const col = g.getAttribute("color"), n = col.count;
    const cfg = config(pane.config);
    const grey = [0.72, 0.72, 0.74];
    if (S.field === "activation" && cfg) {
      const act = cfg._act || (cfg._act = decode(cfg.activation_ms));
      const [lo, hi] = activationRange();
      for (let i = 0; i < n; i++) {
        const c = lin(act[i] <= S.time ? mapStops(sc.colormaps.activation, (act[i] - lo) / (hi - lo || 1)) : grey);
        col.setXYZ(i, c[0], c[1], c[2]);
      }
    } else if (S.field === "aha" && sc.mesh.fields.aha) {
      const aha = sc.mesh._aha || (sc.mesh._aha = decode(sc.mesh.fields.aha));
      for (let i = 0; i < n; i++) { const c = lin(sc.colormaps.aha[Math.round(aha[i])] || grey); col.setXYZ(i, c[0], c[1], c[2]); }
    } else if (sc.mesh.fields[S.field]) {
      const f = sc.mesh["_" + S.field] || (sc.mesh["_" + S.field] = decode(sc.mesh.fields[S.field]));
      let lo = Infinity, hi = -Infinity;
      for (const v of f) { if (v < lo) lo = v; if (v > hi) hi = v; }
      for (let i = 0; i < n; i++) { const c = lin(mapStops(sc.colormaps.activation, (f[i] - lo) / (hi - lo || 1))); col.setXYZ(i, c[0], c[1], c[2]); }
    } else {
      const g = lin(grey);
      for (let i = 0; i < n; i++) col.setXYZ(i, g[0], g[1], g[2]);
    }
    col.needsUpdate = true;
  }

  function isochrones(pane) {
    const grp = pane.layers.isochrones;
    while (grp.children.length) grp.remove(grp.children[0]);
    const cfg = config(pane.config);
    // Isochrones are lines on the reference geometry: left out while the heart is shown deformed.
    if (!cfg || S.field !== "activation" || (S.scene.deformation && Number.isFinite(S.time))) return;
    const segs = cfg._iso || (cfg._iso = decode(cfg.isochrones));
    if (!segs.length) return;
    const g = new THREE.BufferGeometry();
    g.setAttribute("position", new THREE.BufferAttribute(segs, 3));
    grp.add(new THREE.LineSegments(g, new THREE.LineBasicMaterial({ color: 0x101010 })));
  }

  function deform(pane) {
    const d = S.scene.deformation, g = pane.meshGeometry;
    if (!d || !g) return;
    const disp = d._disp || (d._disp = decode(d.displacement_mm));
    const times = d.times_ms, nv = pane.refPositions.length;
    let t = Number.isFinite(S.time) ? S.time : times[0];
    t = Math.min(Math.max(t, times[0]), times[times.length - 1]);
    let k = 0;
    while (k < times.length - 2 && times[k + 1] < t) k++;
    const u = times.length > 1 ? Math.min(1, Math.max(0, (t - times[k]) / (times[k + 1] - times[k] || 1))) : 0;
    const pos = g.getAttribute("position"), ref = pane.refPositions;
    const a = k * nv, b = Math.min(k + 1, times.length - 1) * nv;
    for (let i = 0; i < nv; i++) pos.array[i] = ref[i] + (1 - u) * disp[a + i] + u * disp[b + i];
    pos.needsUpdate = true;
    g.computeVertexNormals();
  }

  function updatePane(pane) {
    fieldColours(pane);
    isochrones(pane);
    deform(pane);
    const L = pane.layers, on = (id) => $("#" + id).checked;
    if (L.labels) L.labels.visible = on("layer-labels");
    if (L.mesh) L.mesh.visible = on("layer-mesh");
    if (L.edges) L.edges.visible = on("layer-edges");
    if (L.fibres) L.fibres.visible = on("layer-fibres");
    L.isochrones.visible = on("layer-isochrones");
    L.candidates.visible = on("layer-candidates");
    for (const m of L.candidates.children) m.scale.setScalar(m.userData.candidateId === S.selected ? 1.6 : 1.0);
    const cfg = config(pane.config);
    pane.root.querySelector(".pane-title").textContent =
      (cfg ? cfg.label : "Anatomy") + (S.field && S.field !== "none" ? " \u2014 " + fieldLabel(S.field) : "");
    const bar = pane.root.querySelector(".colorbar");
    if (S.field === "activation" && cfg) {
      const [lo, hi] = activationRange();
      bar.innerHTML = `<div class="bar" style="background:${gradientCss(S.scene.colormaps.activation)}"></div>` +
        `<div class="ticks"><span>${lo.toFixed(0)} ms</span><span>activation</span><span>${hi.toFixed(0)} ms</span></div>`;
    } else bar.innerHTML = "";
  }

  function renderAll() {
    for (const p of S.panes) {
      if (p.root.hidden) continue;
      const w = p.canvas.clientWidth, h = p.canvas.clientHeight;
      if (p.canvas.width !== Math.floor(w * p.renderer.getPixelRatio()) || p.canvas.height !== Math.floor(h * p.renderer.getPixelRatio()))
        p.renderer.setSize(w, h, false);
      S.camera.aspect = w / Math.max(h, 1);
      S.camera.updateProjectionMatrix();
      p.renderer.render(p.scene, S.camera);
    }
  }

  function refresh() {
    S.panes[0].config = S.configA;
    S.panes[1].config = S.configB;
    S.panes[1].root.hidden = !S.compare;
    $("#config-b-row").style.display = S.compare ? "" : "none";
    drawBullseye();
    drawSlicesAll();
    if ((S.scene.crt_ecg || []).length) drawECG();
    highlightPV();
    refreshTime();
  }

  // What changes with the time slider only (runs every frame while playing).
  function refreshTime() {
    for (const p of S.panes) if (!p.root.hidden) updatePane(p);
    renderAll();
    markPV();
    markECG();
    const [lo, hi] = activationRange();
    $("#time-label").textContent = !S.scene.configurations.length && !S.scene.deformation ? "no activation maps" : Number.isFinite(S.time) ? `t = ${S.time.toFixed(0)} ms` : `all (${lo.toFixed(0)}-${hi.toFixed(0)} ms)`;
  }

  const FIELD_LABELS = { activation: "activation time", aha: "AHA segments", uvc_transmural: "transmural coordinate",
                         uvc_apicobasal: "apicobasal coordinate", uvc_rotational: "rotational coordinate", none: "anatomy" };
  const fieldLabel = (f) => FIELD_LABELS[f] || f;

  // ------------------------------------------------------------------ candidates
  function selectCandidate(id, opts) {
    S.selected = id;
    const c = S.scene.candidates.find((x) => x.id === id);
    for (const tr of document.querySelectorAll("#candidate-table tr")) tr.classList.toggle("selected", tr.dataset.id === id);
    const box = $("#candidate-details");
    if (!c) { box.innerHTML = ""; return; }
    let html = `<div><strong>${escapeHtml(c.label)}</strong></div><table>`;
    if (c.rank !== null) html += `<tr><td>rank</td><td>${c.rank}</td></tr>`;
    if (c.response !== null) html += `<tr><td>${escapeHtml(c.response_name)}</td><td>${c.response.toPrecision(3)}</td></tr>`;
    if (c.position_mm) html += `<tr><td>lead position (LPS mm)</td><td>${c.position_mm.map((v) => v.toFixed(1)).join(", ")}</td></tr>`;
    const rows = c.details || [...Object.entries(c.metrics), ["identifier", c.id]];
    for (const [k, v] of rows) html += `<tr><td>${escapeHtml(k)}</td><td>${typeof v === "number" ? v.toPrecision(4) : escapeHtml(v)}</td></tr>`;
    box.innerHTML = html + "</table>";
    box.dataset.candidate = c.id;
    if (opts && opts.switchPane !== undefined && c.configuration) {
      if (opts.switchPane === 1 && S.compare) { S.configB = c.configuration; $("#config-b").value = c.configuration; }
      else { S.configA = c.configuration; $("#config-a").value = c.configuration; }
    }
    refresh();
  }
  const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch]));

  function buildCandidateTable() {
    const sc = S.scene, tbl = $("#candidate-table");
    const ordered = [...sc.candidates].sort((a, b) => (a.rank ?? 1e9) - (b.rank ?? 1e9));
    if (sc.candidates.length) {
      const names = [...new Set(sc.candidates.map((c) => c.response_name))].join(" / ");
      $("#candidate-legend").textContent = `marker colour: ${names}, red = lowest, green = highest. Click a marker or a row.`;
    }
    for (const c of ordered) {
      const tr = document.createElement("tr");
      tr.dataset.id = c.id;
      tr.title = c.label;
      tr.innerHTML = `<td>${c.rank ?? ""}</td><td><span class="swatch" style="background:${css(candidateColour(c))}"></span>${escapeHtml(c.label)}</td>` +
        `<td>${c.response === null ? "" : c.response.toFixed(2)}</td>`;
      tr.addEventListener("click", () => selectCandidate(c.id, { switchPane: 0 }));
      tbl.appendChild(tr);
    }
  }

  // ------------------------------------------------------------------ slices
  function setupSlices() {
    const v = S.scene.volume;
    if (!v || !v.shape) { $("#slices").hidden = true; return; }
    S.vol = { shape: v.shape, scan: decode(v.scan), labels: decode(v.labels), spacing: v.spacing_mm,
              idx: v.shape.map((n) => Math.floor(n / 2)) };
    const names = v.slice_names || ["i", "j", "k"];
    for (let axis = 0; axis < 3; axis++) {
      const div = document.createElement("div");
      div.className = "slice";
      div.innerHTML = `<canvas id="slice-${axis}"></canvas><input type="range" id="slice-index-${axis}" min="0" max="${v.shape[axis] - 1}" value="${S.vol.idx[axis]}"><div class="caption">${names[axis]} <span></span></div>`;
      $("#slices").appendChild(div);
      const input = div.querySelector("input");
      input.addEventListener("input", () => { S.vol.idx[axis] = +input.value; drawSlicesAll(); });
      div.querySelector("canvas").addEventListener("wheel", (e) => {
        e.preventDefault();
        S.vol.idx[axis] = Math.min(v.shape[axis] - 1, Math.max(0, S.vol.idx[axis] + (e.deltaY > 0 ? 1 : -1)));
        input.value = S.vol.idx[axis];
        drawSlicesAll();
      }, { passive: false });
    }
  }

  function drawSlice(axis) {
    const V = S.vol, [nx, ny, nz] = V.shape;
    const other = [0, 1, 2].filter((a) => a !== axis);  // image columns: other[0], rows: other[1] (flipped: up = +)
    const w = V.shape[other[0]], h = V.shape[other[1]];
    const canvas = document.getElementById("slice-" + axis);
    canvas.width = w; canvas.height = h;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(w, h);
    const labCol = {};
    for (const s of S.scene.label_surfaces) labCol[s.label] = s.colour;
    const ijk = [0, 0, 0];
    ijk[axis] = V.idx[axis];
    for (let r = 0; r < h; r++) {
      for (let c = 0; c < w; c++) {
        ijk[other[0]] = c; ijk[other[1]] = h - 1 - r;
        const n = ijk[0] + nx * (ijk[1] + ny * ijk[2]);
        const g = V.scan ? V.scan[n] : 0;
        let rgb = [g, g, g];
        const l = V.labels ? V.labels[n] : 0;
        if (l && labCol[l]) rgb = rgb.map((x, i) => 0.55 * x + 0.45 * labCol[l][i]);
        const o = 4 * (r * w + c);
        img.data[o] = rgb[0]; img.data[o + 1] = rgb[1]; img.data[o + 2] = rgb[2]; img.data[o + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    canvas.style.aspectRatio = `${w * V.spacing[other[0]]} / ${h * V.spacing[other[1]]}`;
    canvas.parentElement.querySelector(".caption span").textContent = `${V.idx[axis] + 1} / ${V.shape[axis]}`;
    void nz;
  }
  function drawSlicesAll() { if (S.vol) for (let a = 0; a < 3; a++) drawSlice(a); }

  // ------------------------------------------------------------------ panels
  function svgEl(tag, attrs, parent) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  }
  function sector(r0, r1, a0, a1) {  // degrees, counter-clockwise from +x; SVG y points down
    const p = (r, a) => `${(r * Math.cos(a * Math.PI / 180)).toFixed(2)},${(-r * Math.sin(a * Math.PI / 180)).toFixed(2)}`;
    if (r0 === 0) return `M0,0 m${-r1},0 a${r1},${r1} 0 1,0 ${2 * r1},0 a${r1},${r1} 0 1,0 ${-2 * r1},0`;
    const large = a1 - a0 > 180 ? 1 : 0;
    return `M${p(r1, a0)} A${r1},${r1} 0 ${large},0 ${p(r1, a1)} L${p(r0, a1)} A${r0},${r0} 0 ${large},1 ${p(r0, a0)} Z`;
  }
  // AHA 17 (Cerqueira 2002): anterior at the top, septum on the left.
  function ahaLayout() {
    const out = [];
    for (let i = 0; i < 6; i++) out.push([1 + i, 80, 115, 60 + 60 * i, 120 + 60 * i]);
    for (let i = 0; i < 6; i++) out.push([7 + i, 45, 80, 60 + 60 * i, 120 + 60 * i]);
    for (let i = 0; i < 4; i++) out.push([13 + i, 18, 45, 45 + 90 * i, 135 + 90 * i]);
    out.push([17, 0, 18, 0, 360]);
    return out;
  }
  function drawBullseye() {
    const panel = $("#panel-bullseye"), holder = panel.querySelector(".bullseyes");
    const strain = S.scene.pv && Object.keys(S.scene.pv.aha_fibre_strain).length ? S.scene.pv.aha_fibre_strain : null;
    const cfgs = [config(S.configA), S.compare ? config(S.configB) : null].filter((c) => c && c.aha_mean_ms);
    let maps = S.field === "activation" && cfgs.length ? cfgs.map((c) => [c.label + " (ms)", c.aha_mean_ms, activationRange()])
      : strain ? [["end-systolic fibre strain", strain, [Math.min(...Object.values(strain)), Math.max(...Object.values(strain))]]] : [];
    // The AHA field shown on the mesh: the bullseye is its colour key.
    if (S.field === "aha" || (!maps.length && S.scene.mesh && S.scene.mesh.fields.aha)) maps = [["AHA segments (colour key)", null, [0, 1]]];
    if (!maps.length) { panel.hidden = true; return; }
    panel.hidden = false;
    holder.innerHTML = "";
    for (const [title, values, [lo, hi]] of maps) {
      const fig = document.createElement("figure");
      const svg = svgEl("svg", { viewBox: "-120 -120 240 240" }, fig);
      for (const [seg, r0, r1, a0, a1] of ahaLayout()) {
        const v = values ? values[String(seg)] : undefined;
        const rgb = !values ? S.scene.colormaps.aha[seg] : v === undefined ? [0.3, 0.3, 0.3] : mapStops(S.scene.colormaps.activation, (v - lo) / (hi - lo || 1));
        const path = svgEl("path", { d: sector(r0, r1, a0, a1), fill: css(rgb), stroke: "#111", "stroke-width": 1, "data-segment": seg }, svg);
        svgEl("title", {}, path).textContent = `${seg} ${S.scene.aha_names[String(seg)] || ""}: ${v === undefined ? "n/a" : v.toFixed(2)}`;
        const am = (a0 + a1) / 2 * Math.PI / 180, rm = r0 === 0 ? 0 : (r0 + r1) / 2;
        const t = svgEl("text", { x: rm * Math.cos(am), y: -rm * Math.sin(am) + 3, "text-anchor": "middle" }, svg);
        t.textContent = v === undefined ? seg : (Math.abs(hi) > 5 ? v.toFixed(0) : v.toFixed(2));
        t.style.fill = "#000";
      }
      const cap = document.createElement("figcaption");
      cap.textContent = title;
      fig.appendChild(cap);
      holder.appendChild(fig);
    }
  }

  function axes(svg, box, xr, yr, xlabel, ylabel) {
    const [x0, y0, w, h] = box;
    svgEl("rect", { x: x0, y: y0, width: w, height: h, fill: "none", stroke: "#556" }, svg);
    const tx = svgEl("text", { x: x0 + w / 2, y: y0 + h + 26, "text-anchor": "middle" }, svg); tx.textContent = xlabel;
    const ty = svgEl("text", { x: 10, y: y0 + h / 2, transform: `rotate(-90 10 ${y0 + h / 2})`, "text-anchor": "middle" }, svg); ty.textContent = ylabel;
    const fmt = (v, span) => v.toFixed(span < 10 ? 2 : span < 100 ? 1 : 0);
    for (let i = 0; i <= 4; i++) {
      const xv = xr[0] + (xr[1] - xr[0]) * i / 4, yv = yr[0] + (yr[1] - yr[0]) * i / 4;
      const a = svgEl("text", { x: x0 + w * i / 4, y: y0 + h + 12, "text-anchor": "middle" }, svg); a.textContent = fmt(xv, xr[1] - xr[0]);
      const b = svgEl("text", { x: x0 - 3, y: y0 + h - h * i / 4 + 3, "text-anchor": "end" }, svg); b.textContent = fmt(yv, yr[1] - yr[0]);
    }
    return (x, y) => [x0 + (x - xr[0]) / (xr[1] - xr[0] || 1) * w, y0 + h - (y - yr[0]) / (yr[1] - yr[0] || 1) * h];
  }

  // Loops to draw: the electromechanics stage's beat (LV and RV) and the CRT stage's LV loops of the
  // baseline and of each candidate with a beat; the loops of the shown configurations are drawn bold.
  const PALETTE = ["#e0503c", "#f0b429", "#57c785", "#4f8de0", "#b86bd6", "#e07bb1"];
  function pvLoops() {
    const sc = S.scene, loops = [];
    if (sc.pv) for (const [cav, c] of Object.entries(sc.pv.cavities))
      loops.push({ key: "em-" + cav, label: cav + " (electromechanics stage)", c, cavity: cav, em: true,
                   colour: { LV: "#e0503c", RV: "#4f8de0" }[cav] || "#ccc" });
    let k = 0;
    for (const b of sc.crt_pv || []) {
      if (!b.cavities.LV) continue;
      loops.push({ key: b.id, label: b.label, c: b.cavities.LV, cavity: "LV", configuration: b.configuration,
                   colour: b.id === "baseline" ? "#d8dde4" : PALETTE[k++ % PALETTE.length] });
    }
    return loops;
  }

  function drawCalibration() {
    const panel = $("#panel-calibration"), cal = S.scene.calibration;
    if (!cal || !cal.rows.length) { panel.hidden = true; return; }
    panel.hidden = false;
    const fmt = (v, unit) => v === null || v === undefined ? "n/a" : unit ? `${v.toFixed(1)} ${unit}` : `${(100 * v).toFixed(1)} %`;
    const table = panel.querySelector("table");
    table.innerHTML = "";
    const head = table.insertRow();
    for (const h of ["", "measured", "twin"]) head.appendChild(document.createElement("th")).textContent = h;
    for (const r of cal.rows) {
      const tr = table.insertRow();
      tr.dataset.key = r.key;
      for (const text of [r.label, fmt(r.measured, r.unit), fmt(r.twin, r.unit)]) tr.insertCell().textContent = text;
    }
    for (const p of cal.parameters) {
      const tr = table.insertRow();
      tr.dataset.parameter = p.name;
      const iv = Array.isArray(p.interval) ? ` [${p.interval.map((x) => x.toPrecision(3)).join(", ")}]` : "";
      tr.insertCell().textContent = p.name;
      const td = tr.insertCell();
      td.colSpan = 2;
      td.textContent = `${typeof p.value === "number" ? p.value.toPrecision(3) : "n/a"} ${p.unit || ""}${iv}`;
    }
    // the fit figure is a file of the case: served by the review server, not part of a static export
    if (cal.figure && location.protocol.startsWith("http") && !panel.querySelector("img")) {
      const img = document.createElement("img");
      img.src = "case/" + cal.figure;
      img.alt = "calibration fit: EDPVR, PV loop and volume curve against the measurements";
      img.style.maxWidth = "100%";
      panel.appendChild(img);
    }
  }

  function drawPV() {
    const panel = $("#panel-pv"), loops = pvLoops();
    if (!loops.length) { panel.hidden = true; return; }
    const svg = panel.querySelector("svg");
    const H = 240 + 13 * loops.length;
    svg.setAttribute("viewBox", `0 0 320 ${H}`);
    svg.classList.add("tall");
    const vs = loops.flatMap((l) => l.c.volume_ml), ps = loops.flatMap((l) => l.c.pressure_mmhg);
    const tr = axes(svg, [44, 10, 260, 190], [Math.min(...vs), Math.max(...vs)], [0, Math.max(...ps) * 1.05], "volume (mL)", "pressure (mmHg)");
    loops.forEach((l, i) => {
      const pts = l.c.volume_ml.map((v, k) => tr(v, l.c.pressure_mmhg[k]).map((x) => x.toFixed(1)).join(",")).join(" ");
      const attrs = { points: pts, fill: "none", stroke: l.colour, "stroke-width": 1.6, "data-cavity": l.cavity };
      if (!l.em) attrs["data-beat"] = l.key;
      svgEl("polyline", attrs, svg);
      const ef = l.c.ejection_fraction == null ? "" : `, EF ${(100 * l.c.ejection_fraction).toFixed(0)} %`;
      const t = svgEl("text", { x: 8, y: 242 + 13 * i }, svg); t.textContent = "\u2014 " + l.label + ef; t.style.fill = l.colour;
      if (l.em) svgEl("circle", { r: 4, fill: l.colour, stroke: "#fff", class: "pv-now", "data-cavity": l.cavity, visibility: "hidden" }, svg);
    });
    S.pvTransform = tr;
  }

  // The loops of the configurations on screen are bold (the others thin).
  function highlightPV() {
    const shown = new Set([S.configA, S.compare ? S.configB : null]);
    for (const pl of document.querySelectorAll("#panel-pv polyline[data-beat]")) {
      const l = (S.scene.crt_pv || []).find((b) => b.id === pl.dataset.beat);
      pl.setAttribute("stroke-width", l && shown.has(l.configuration) ? 3.2 : 1.2);
    }
  }

  // The current time on each PV loop of the electromechanics stage (linear interpolation of the beat).
  function markPV() {
    const pv = S.scene.pv;
    if (!pv || !pv.times_ms.length) return;
    const t = S.time, ts = pv.times_ms;
    for (const dot of document.querySelectorAll("#panel-pv .pv-now")) {
      if (!Number.isFinite(t)) { dot.setAttribute("visibility", "hidden"); continue; }
      const c = pv.cavities[dot.dataset.cavity];
      let k = 0;
      while (k < ts.length - 2 && ts[k + 1] < t) k++;
      const u = Math.min(1, Math.max(0, (t - ts[k]) / (ts[k + 1] - ts[k] || 1)));
      const lerp = (a) => a[k] + u * (a[Math.min(k + 1, a.length - 1)] - a[k]);
      const [x, y] = S.pvTransform(lerp(c.volume_ml), lerp(c.pressure_mmhg));
      dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("visibility", "visible");
    }
  }

  // ECG shown: the CRT stage's pseudo-ECG of the left pane's configuration over the baseline's (grey),
  // else the EP stage's record.
  function ecgTraces() {
    const sc = S.scene, crt = sc.crt_ecg || [];
    if (crt.length) {
      const base = crt.find((e) => e.id === "baseline");
      const shown = crt.find((e) => e.configuration && e.configuration === S.configA) || base || crt[0];
      const out = [{ e: shown, colour: "#7be07b" }];
      if (base && shown !== base) out.unshift({ e: base, colour: "#7d8590" });
      return out;
    }
    return sc.ecg ? [{ e: { id: "ep", label: "EP stage", times_ms: sc.ecg.times_ms, leads: sc.ecg.leads }, colour: "#7be07b" }] : [];
  }

  function drawECG() {
    const panel = $("#panel-ecg"), traces = ecgTraces();
    if (!traces.length) { panel.hidden = true; return; }
    const svg = panel.querySelector("svg");
    svg.innerHTML = "";
    const names = Object.keys(traces[traces.length - 1].e.leads);
    const rowH = 200 / names.length, x0 = 36, w = 276;
    const t0 = Math.min(...traces.map((tr) => tr.e.times_ms[0]));
    const t1 = Math.max(...traces.map((tr) => tr.e.times_ms[tr.e.times_ms.length - 1]));
    // One amplitude scale per lead group (limb I-aVF, precordial V1-V6) over all traces shown, so
    // relative amplitudes stay visible; the pseudo-ECG's limb electrodes are far away and much smaller.
    const group = (name) => (/^V\d/.test(name) ? "precordial" : "limb");
    const amps = {};
    for (const tr of traces) for (const [name, v] of Object.entries(tr.e.leads))
      amps[group(name)] = Math.max(amps[group(name)] || 0, ...v.map(Math.abs));
    const xOf = (tt) => x0 + (tt - t0) / (t1 - t0 || 1) * w;
    for (const tr of traces) {
      const t = tr.e.times_ms;
      names.forEach((name, i) => {
        const v = tr.e.leads[name];
        if (!v) return;
        const mid = 10 + rowH * (i + 0.5), amp = amps[group(name)] || 1;
        const pts = v.map((y, k) => `${xOf(t[k]).toFixed(1)},${(mid - (y / amp) * rowH * 0.95).toFixed(1)}`).join(" ");
        svgEl("polyline", { points: pts, fill: "none", stroke: tr.colour, "stroke-width": 1, "data-lead": name, "data-ecg": tr.e.id }, svg);
      });
    }
    names.forEach((name, i) => { const lab = svgEl("text", { x: 2, y: 10 + rowH * (i + 0.5) + 3 }, svg); lab.textContent = name; });
    const qrs = (e) => (e.qrs_ms == null ? "" : `, QRS ${e.qrs_ms.toFixed(0)} ms`);
    const shown = traces[traces.length - 1].e;
    // one caption line per trace (green: the configuration shown; grey: the baseline under it)
    const lines = traces.length > 1 ? [`green: ${shown.label}${qrs(shown)}`, `grey: ${traces[0].e.label}${qrs(traces[0].e)}`]
      : [`${shown.label}${qrs(shown)}`];
    lines.push(`time (ms), ${t0.toFixed(0)}-${t1.toFixed(0)}; one scale for limb, one for precordial leads`);
    svg.setAttribute("viewBox", `0 0 320 ${214 + 11 * lines.length}`);
    lines.forEach((text, i) => {
      const cap = svgEl("text", { x: 2, y: 222 + 11 * i, "font-size": 8.5 }, svg);
      cap.textContent = text;
      cap.style.fontSize = "8.5px";
    });
    S.ecgX = xOf;
    svgEl("line", { class: "ecg-now", y1: 8, y2: 212, stroke: "#ffffff", "stroke-width": 0.8, visibility: "hidden" }, svg);
    panel.dataset.ecg = shown.id;
  }

  function markECG() {
    const line = document.querySelector("#panel-ecg .ecg-now");
    if (!line) return;
    if (!Number.isFinite(S.time)) { line.setAttribute("visibility", "hidden"); return; }
    const x = S.ecgX(S.time);
    line.setAttribute("x1", x); line.setAttribute("x2", x); line.setAttribute("visibility", "visible");
  }

  // ------------------------------------------------------------------ controls
  function setupControls() {
    const sc = S.scene;
    const fields = [];
    if (sc.configurations.length) fields.push("activation");
    if (sc.mesh) fields.push(...Object.keys(sc.mesh.fields));
    fields.push("none");
    S.field = fields[0];
    for (const f of fields) { const o = document.createElement("option"); o.value = f; o.textContent = fieldLabel(f); $("#field-select").appendChild(o); }
    const fill = (sel) => {
      if (!sc.configurations.length) { const o = document.createElement("option"); o.value = ""; o.textContent = "anatomy only"; sel.appendChild(o); }
      for (const c of sc.configurations) { const o = document.createElement("option"); o.value = c.id; o.textContent = c.label; sel.appendChild(o); }
    };
    fill($("#config-a")); fill($("#config-b"));
    S.configA = sc.configurations.length ? sc.configurations[0].id : null;
    S.configB = sc.configurations.length > 1 ? sc.configurations[1].id : S.configA;
    $("#config-b").value = S.configB || "";
    $("#field-select").addEventListener("change", (e) => { S.field = e.target.value; refresh(); });
    $("#config-a").addEventListener("change", (e) => { S.configA = e.target.value || null; refresh(); });
    $("#config-b").addEventListener("change", (e) => { S.configB = e.target.value || null; refresh(); });
    $("#compare-toggle").addEventListener("change", (e) => { S.compare = e.target.checked; refresh(); });
    for (const id of ["layer-labels", "layer-mesh", "layer-edges", "layer-fibres", "layer-isochrones", "layer-candidates"])
      $("#" + id).addEventListener("change", refresh);
    if (!sc.mesh) $("#layer-labels").checked = true;
    const slider = $("#time-slider");
    const sliderTime = () => {
      const [lo, hi] = timeRange();
      return +slider.value >= 1000 ? Infinity : lo + (hi - lo) * slider.value / 1000;
    };
    slider.addEventListener("input", () => { S.time = sliderTime(); refreshTime(); });
    $("#play-button").addEventListener("click", () => {
      S.playing = !S.playing;
      $("#play-button").textContent = S.playing ? "Pause" : "Play";
      let last = performance.now();
      const step = (now) => {
        if (!S.playing) return;
        slider.value = (+slider.value + (now - last) / 4) % 1001;
        last = now;
        S.time = sliderTime();
        refreshTime();
        requestAnimationFrame(step);
      };
      requestAnimationFrame(step);
    });
    const absent = $("#absent-list");
    for (const [k, why] of Object.entries(sc.absent)) { const li = document.createElement("li"); li.textContent = `${k}: ${why}`; absent.appendChild(li); }
  }
  function timeRange() {
    const [lo, hi] = activationRange();
    const d = S.scene.deformation;
    return d ? [Math.min(lo, d.times_ms[0]), Math.max(hi, d.times_ms[d.times_ms.length - 1])] : [lo, hi];
  }

  function frameCamera() {
    const sc = S.scene, box = new THREE.Box3();
    const add = (arr) => { for (let i = 0; i < arr.length; i += 3) box.expandByPoint(new THREE.Vector3(arr[i], arr[i + 1], arr[i + 2])); };
    if (sc.mesh) add(decode(sc.mesh.vertices));
    else for (const s of sc.label_surfaces) add(decode(s.vertices));
    for (const c of sc.candidates) if (c.position_mm) box.expandByPoint(new THREE.Vector3(...c.position_mm));
    if (box.isEmpty()) box.set(new THREE.Vector3(-50, -50, -50), new THREE.Vector3(50, 50, 50));
    const sphere = box.getBoundingSphere(new THREE.Sphere());
    S.sceneCentre = sphere.center;
    S.sceneRadius = sphere.radius;
    const cam = new THREE.PerspectiveCamera(35, 1, sphere.radius / 50, sphere.radius * 20);
    S.camera = cam;
    placeCamera(DEFAULT_VIEW);
  }

  // Standard fluoroscopy views in LPS (x = patient's left, y = posterior, z = superior): the
  // direction from the heart to the camera; superior is up, so the apex points down.
  const deg = Math.PI / 180;
  const VIEWS = {
    "LAO 40": [Math.sin(40 * deg), -Math.cos(40 * deg), 0],
    "RAO 30": [-Math.sin(30 * deg), -Math.cos(30 * deg), 0],
    "AP": [0, -1, 0],
    "left lateral": [1, 0, 0],
    "PA": [0, 1, 0],
  };
  const DEFAULT_VIEW = "LAO 40";
  function placeCamera(name) {
    const cam = S.camera, d = new THREE.Vector3(...VIEWS[name]).normalize();
    cam.up.set(0, 0, 1);
    cam.position.copy(S.sceneCentre).addScaledVector(d, S.sceneRadius * 2.9);
    cam.lookAt(S.sceneCentre);
    S.view = name;
    document.body.dataset.view = name;
    for (const b of document.querySelectorAll("#view-buttons button")) b.classList.toggle("active", b.dataset.view === name);
  }
  function setView(name) {
    if (!VIEWS[name]) throw new Error("unknown view " + name);
    placeCamera(name);
    for (const p of S.panes) { p.controls.target.copy(S.sceneCentre); p.controls.update(); }
    renderAll();
  }

  // ------------------------------------------------------------------ test/automation hooks
  function markerScreenPosition(id) {
    const pane = S.panes[0];
    const m = pane.layers.candidates.children.find((x) => x.userData.candidateId === id);
    if (!m) return null;
    const p = m.position.clone().project(S.camera), r = pane.canvas.getBoundingClientRect();
    return { x: r.left + (p.x + 1) / 2 * r.width, y: r.top + (1 - p.y) / 2 * r.height };
  }

  async function main() {
    try {
      S.scene = await loadScene();
      $("#case-id").textContent = "case " + S.scene.case_id;
      frameCamera();
      S.panes = [makePane(0, S.scene), makePane(1, S.scene)];
      setupControls();
      buildCandidateTable();
      setupSlices();
      drawCalibration();
      drawPV();
      drawECG();
      refresh();
      window.addEventListener("resize", renderAll);
      // Layout changes (a scrollbar appearing, the compare pane opening) resize the canvases.
      const ro = new ResizeObserver(() => renderAll());
      for (const p of S.panes) ro.observe(p.canvas);
      $("#status").textContent = `${S.scene.present.join(", ")}`;
      for (const b of document.querySelectorAll("#view-buttons button")) b.addEventListener("click", () => setView(b.dataset.view));
      placeCamera(S.view);  // marks the active button
      window.cardiotwinViewer = { state: S, refresh, selectCandidate, markerScreenPosition, renderAll, setView };
      document.body.dataset.ready = "1";
    } catch (err) {
      $("#status").textContent = "error: " + err.message;
      document.body.dataset.error = String(err && err.stack || err);
      throw err;
    }
  }
  main();
})();

// The operator page: polls /status.json once a second and redraws. No framework; text
// goes in through textContent only.
"use strict";
(function () {
  const POLL_MS = 1000;
  const STALE_MS = 5000;
  let lastOk = 0;

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const fmt = (value, digits) => Number(value).toLocaleString("en-US", {
    maximumFractionDigits: digits, minimumFractionDigits: digits });
  const age = (ms) => ms === null || ms === undefined ? "never"
    : ms < 1000 ? "< 1 s ago" : ms < 120000 ? fmt(ms / 1000, 0) + " s ago"
    : fmt(ms / 60000, 0) + " min ago";
  const when = (unixMs) => unixMs ? new Date(unixMs).toLocaleString() : "?";
  const bytes = (n) => n < 1e3 ? fmt(n, 0) + " B" : n < 1e6 ? fmt(n / 1e3, 1) + " kB"
    : n < 1e9 ? fmt(n / 1e6, 1) + " MB" : fmt(n / 1e9, 2) + " GB";
  const words = (name) => name.replace(/_/g, " ");

  function renderJournal(j) {
    $("journal").classList.toggle("empty-slot", !j);
    $("journal-off").hidden = !!j;
    $("journal-figures").hidden = !j;
    if (!j) return;
    const events = $("journal-events");
    events.textContent = fmt(j.events, 0) + " events";
    events.dataset.value = String(j.events);
    $("journal-bytes").textContent = bytes(j.bytes) + " (" + fmt(j.segments, 0) + (j.segments === 1 ? " segment" : " segments") + " on disk)";
    const fsync = $("journal-fsync");
    fsync.textContent = j.last_fsync_age_ms === 0 ? "all durable" : age(j.last_fsync_age_ms);
    fsync.className = j.fsync_errors > 0 ? "bad" : "";
    if (j.fsync_errors > 0) fsync.textContent += ", " + fmt(j.fsync_errors, 0) + " fsync errors";
    const lost = j.lost.filter((l) => l.total > 0);
    const lostEl = $("journal-lost");
    lostEl.textContent = lost.length ? lost.map((l) => words(l.reason) + " " + fmt(l.total, 0)).join(", ") : "none";
    lostEl.className = lost.length ? "bad" : "";
    const x = j.export;
    const state = $("export-state");
    state.dataset.state = x ? x.state : "off";
    state.textContent = !x ? "off" : (x.broker_connected ? "connected, " : "NOT connected, ") + words(x.state) +
      (x.errors > 0 ? ", " + fmt(x.errors, 0) + " errors" : "");
    state.className = x && !x.broker_connected ? "bad" : "";
    $("export-cursor").textContent = x ? "seq " + fmt(x.cursor_seq, 0) : "–";
    $("export-lag").textContent = x ? fmt(x.lag_events, 0) + " events, " + fmt(x.lag_s, 1) + " s" : "–";
  }

  function render(s) {
    const up = s.plc.link_up;
    const link = $("link");
    link.dataset.state = up ? "up" : "down";
    link.textContent = "PLC link " + (up ? "up" : "DOWN");
    $("plan").textContent = "plan " + s.plan.name + " v" + s.plan.version + " since " + when(s.plan.since_unix_ms);

    const rate = $("decided-rate");
    rate.textContent = fmt(s.decided_per_s, 1);
    rate.dataset.value = String(s.decided_per_s);
    const reasons = $("reasons").tBodies[0];
    reasons.replaceChildren(...s.reasons.map((r) => {
      const row = el("tr", { "data-reason": r.reason, "data-rate": String(r.per_s) });
      const bad = r.reason !== "sorted_primary" && r.reason !== "sorted_alternate" && r.per_s > 0;
      if (bad) row.className = "bad";
      row.append(el("td", {}, r.reason.replace(/_/g, " ")), el("td", { class: "num" }, fmt(r.per_s, 1) + " /s"),
        el("td", { class: "num muted" }, fmt(r.total, 0)));
      return row;
    }));

    $("plc-state").textContent = up ? "up" : "down";
    $("plc-ack").textContent = age(s.plc.last_ack_age_ms);
    $("plc-in-flight").textContent = fmt(s.plc.in_flight, 0);
    $("plc-downs").textContent = fmt(s.plc.link_downs, 0);

    const scanners = $("scanners").tBodies[0];
    scanners.replaceChildren(...s.scanners.map((sc) => {
      const row = el("tr", { "data-scanner": String(sc.scanner_id), "data-rate": String(sc.scans_per_s) });
      if (sc.bad_inputs > 0) row.className = "bad";
      row.append(el("td", {}, String(sc.scanner_id)), el("td", {}, sc.peer || "?"),
        el("td", { class: "num" }, fmt(sc.scans_per_s, 1)), el("td", { class: "num" }, fmt(sc.bad_inputs, 0)));
      return row;
    }));
    $("scanners-none").hidden = s.scanners.length > 0;

    renderJournal(s.journal);

    const full = s.chutes.filter((c) => c.state === "full").length;
    const disabled = s.chutes.filter((c) => c.state === "disabled").length;
    $("chute-summary").textContent = s.chutes.length + " shown, " + full + " full, " + disabled + " disabled" +
      (s.chutes_omitted ? ", " + s.chutes_omitted + " more not shown" : "");
    $("chutes").replaceChildren(...s.chutes.map((c) => {
      const tile = el("div", { class: "chute " + c.state, "data-chute": String(c.chute), "data-state": c.state,
        "data-rate": String(c.per_min), title: "chute " + c.chute + ": " + c.state + ", " + c.total + " parcels" });
      tile.append(el("div", { class: "n" }, String(c.chute)), el("div", { class: "r" }, fmt(c.per_min, 0) + "/min"),
        el("div", { class: "s" }, c.state));
      return tile;
    }));
  }

  function markStale() {
    const updated = $("updated");
    const stale = Date.now() - lastOk > STALE_MS;
    updated.dataset.stale = String(stale);
    updated.textContent = lastOk === 0 ? "waiting for data"
      : (stale ? "NO DATA since " : "updated ") + new Date(lastOk).toLocaleTimeString();
  }

  async function poll() {
    try {
      const answer = await fetch("status.json", { cache: "no-store" });
      if (answer.ok) {
        render(await answer.json());
        lastOk = Date.now();
      }
    } catch (error) {
      // Shown as stale below; the next poll tries again.
    }
    markStale();
    setTimeout(poll, POLL_MS);
  }
  poll();
})();

// Shared page framework of the hall agent (docs/pages.md).
//
// HallPages.connect(view, params, render) opens the agent's event stream for one view
// and calls render(state, info) with the view's FULL state on every change, including
// the first message after any reconnect: a page never patches, it redraws from the state.
// EventSource reconnects by itself after a dropped connection; when the agent was gone
// long enough for the browser to give up, or nothing (not even a ping) came for three
// ping periods, the stream is opened again here. No external assets are used.
"use strict";

const HallPages = (() => {
  const PING_TIMEOUT_MS = 45000;
  const RETRY_MAX_MS = 10000;

  function connect(view, params, render) {
    const query = new URLSearchParams(params || {});
    const url = `/pages/feed/${encodeURIComponent(view)}?${query}`;
    let source = null;
    let watchdog = null;
    let retryMs = 1000;
    let timer = null;

    const setConnection = (state) => { document.body.dataset.connection = state; };

    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => reopen("no message"), PING_TIMEOUT_MS);
    };

    const reopen = () => {
      if (source) source.close();
      setConnection("lost");
      clearTimeout(timer);
      timer = setTimeout(open, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    };

    function open() {
      source = new EventSource(url);
      arm();
      source.addEventListener("open", () => { arm(); });
      source.addEventListener("ping", () => { arm(); setConnection("live"); });
      source.addEventListener("state", (message) => {
        arm();
        retryMs = 1000;
        setConnection("live");
        const envelope = JSON.parse(message.data);
        hallTime(envelope.server_time);
        render(envelope.view, {
          rev: envelope.rev,
          serverTime: Date.parse(envelope.server_time),
          receivedAt: Date.now(),
        });
        document.body.dataset.rev = String(envelope.rev);
      });
      source.addEventListener("error", () => {
        setConnection("lost");
        // CLOSED: the browser gave up (the agent answered with an error): try again here.
        if (source.readyState === EventSource.CLOSED) reopen();
      });
    }

    setConnection("connecting");
    open();
  }

  // Build DOM nodes: el("div", {class: "x"}, "text", child, ...). Text is never HTML.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function replace(target, ...children) {
    const node = typeof target === "string" ? document.getElementById(target) : target;
    node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  }

  // Calls flash while younger than highlight_s, or when their key is new on this page.
  const seen = new Set();
  let firstState = true;
  function isFresh(call, state, info) {
    if (!call || !call.key) return false;
    const ageMs = info.serverTime - Date.parse(call.at) + (Date.now() - info.receivedAt);
    const isNew = !firstState && !seen.has(call.key);
    return isNew || ageMs < state.highlight_s * 1000;
  }
  function remember(calls) {
    for (const call of calls) if (call && call.key) seen.add(call.key);
    firstState = false;
  }

  function applyCommon(state) {
    document.documentElement.classList.toggle("large", Boolean(state.large_text));
    if (state.hall) {
      document.title = state.hall.name;
      const title = document.getElementById("hall-name");
      if (title && title.textContent !== state.hall.name) title.textContent = state.hall.name;
    }
    const ticker = document.getElementById("notices");
    if (ticker) {
      // By priority; central's notices are marked (【上级通知】) beside the hall's own.
      const texts = (state.notices || []).map((n) => (n.label ? `【${n.label}】${n.text}` : n.text));
      const key = JSON.stringify(texts);
      if (ticker.dataset.key !== key) {
        ticker.dataset.key = key;
        if (texts.length === 0) ticker.replaceChildren();
        else {
          const track = el("div", { class: "track" }, texts.map((t) => el("span", {}, t)));
          const chars = texts.join("").length;
          track.style.animationDuration = `${Math.max(12, chars * 0.35)}s`;
          ticker.replaceChildren(track);
        }
      }
    }
  }

  // The clock shows the hall's time (the agent's clock and zone), not the browser's.
  let clockOffsetMs = 0;
  let zoneOffsetMs = 8 * 3600 * 1000;
  function hallTime(serverTime) {
    const zone = /([+-])(\d\d):(\d\d)$/.exec(serverTime);
    if (zone) {
      const sign = zone[1] === "-" ? -1 : 1;
      zoneOffsetMs = sign * (Number(zone[2]) * 60 + Number(zone[3])) * 60000;
    }
    clockOffsetMs = Date.parse(serverTime) - Date.now();
  }

  function startClock(id) {
    const node = document.getElementById(id);
    if (!node) return;
    const tick = () => {
      const now = new Date(Date.now() + clockOffsetMs + zoneOffsetMs);
      const pad = (n) => String(n).padStart(2, "0");
      const days = ["日", "一", "二", "三", "四", "五", "六"];
      node.textContent = `${now.getUTCFullYear()}-${pad(now.getUTCMonth() + 1)}-`
        + `${pad(now.getUTCDate())} 星期${days[now.getUTCDay()]} `
        + `${pad(now.getUTCHours())}:${pad(now.getUTCMinutes())}`;
    };
    tick();
    setInterval(tick, 1000);
  }

  function pageParams() {
    const params = {};
    const here = new URLSearchParams(location.search);
    if (here.has("large")) params.large = here.get("large");
    return params;
  }

  // The service guide of the ticket at a window (办事指南 · 一次性告知): what staff check
  // the citizen brought (the window screen and the caller page).
  function guideNodes(guide) {
    if (!guide) return [];
    const facts = [];
    if (guide.time_limit) facts.push(`办理时限：${guide.time_limit}`);
    if (guide.fee) facts.push(`收费：${guide.fee}`);
    return [
      el("h2", {}, "办事指南 · 所需材料"),
      guide.summary ? el("p", { class: "summary" }, guide.summary) : null,
      guide.materials.length ? el("ol", { id: "materials" }, guide.materials.map((m) => el("li", {}, m))) : null,
      facts.length ? el("p", { class: "facts" }, facts.join("　")) : null,
      guide.notes.length ? el("ul", { class: "notes" }, guide.notes.map((n) => el("li", {}, n))) : null,
    ];
  }

  return { connect, el, replace, isFresh, remember, applyCommon, startClock, pageParams, guideNodes };
})();

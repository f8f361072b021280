// The manager's page (统计报表, /pages/manager; docs/pages.md, docs/reports.md).
//
// A manager logs in (role manager; docs/security.md), or the ops person opens the page
// with the ops token once in its address (?token=…, removed from the address bar). The
// session token is kept for this tab only (sessionStorage). Everything shown comes from
// GET /api/v1/reports (the same JSON as `hall-agent report --json`); today's figures are
// fetched again whenever the hall changes (the page feed) and every 30 s. The charts are
// inline SVG drawn here: nothing is loaded from outside the hall.
"use strict";

const Manager = (() => {
  const { el, replace } = HallPages;
  const Session = HallManagerSession;  // one sign-in for every manager page (manager-session.js)
  const SVG = "http://www.w3.org/2000/svg";
  const LEVELS = [
    { level: "5", name: "非常满意", color: "#3ddc97" },
    { level: "4", name: "满意", color: "#8be0b8" },
    { level: "3", name: "基本满意", color: "#c3d1e4" },
    { level: "2", name: "不满意", color: "#ffb454" },
    { level: "1", name: "非常不满意", color: "#ff6b6b" },
  ];
  const LEVEL_NAMES = Object.fromEntries(LEVELS.map((l) => [l.level, l.name]));
  const LIVE_POLL_MS = 30000;
  const LIVE_DEBOUNCE_MS = 2000;
  const MAX_DAYS = 400; // as the API (agent/features/reports.py)

  let session = Session.get();
  let today = null; // the hall's business day (YYYY-MM-DD), from the first report
  let range = { kind: "today", from: "today", to: "today" };
  let shown = null; // the report on screen
  let loading = null;
  let liveTimer = null;

  // -- small helpers -------------------------------------------------------------------

  function headers() {
    return { Authorization: `Bearer ${session ? session.token : ""}` };
  }

  function say(id, text, ok) {
    const node = document.getElementById(id);
    node.textContent = text;
    node.className = `message ${text ? (ok ? "ok" : "error") : ""}`;
  }

  function num(value) {
    return value === null || value === undefined ? "—" : String(value);
  }

  function minutes(value) {
    return value === null || value === undefined ? "—" : value.toFixed(1);
  }

  function percent(value) {
    return value === null || value === undefined ? "—" : `${(value * 100).toFixed(1)}%`;
  }

  function duration(mins) {
    if (mins === null || mins === undefined) return "—";
    const total = Math.round(mins);
    const h = Math.floor(total / 60);
    const m = total % 60;
    return h ? `${h}小时${m}分` : `${m}分`;
  }

  function rem() {
    return parseFloat(getComputedStyle(document.documentElement).fontSize) || 16;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function isoDate(d) {
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;
  }

  function dateOf(text) {
    const [y, m, d] = text.split("-").map(Number);
    return new Date(y, m - 1, d);
  }

  function addDays(text, days) {
    const d = dateOf(text);
    d.setDate(d.getDate() + days);
    return isoDate(d);
  }

  // -- signing in ------------------------------------------------------------------------

  function show() {
    const on = Boolean(session);
    document.getElementById("login-panel").hidden = on;
    document.getElementById("report").hidden = !on;
    document.getElementById("logout").hidden = !on;
    document.getElementById("who").textContent = on
      ? (session.role === "ops" ? "运维人员" : `管理员 ${session.name}`) : "";
  }

  function signOut(message) {
    session = null;
    shown = null;
    Session.clear();
    show();
    if (message) say("login-message", message, false);
  }

  function signedIn(signed) {
    session = { token: signed.token, name: signed.name, role: signed.role };
    Session.set(session);
    show();
    load();
  }

  async function logout() {
    if (session && session.role !== "ops") {
      await fetch("/api/v1/auth/logout", { method: "POST", headers: headers() }).catch(() => null);
    }
    signOut("");
  }

  // The ops token, once in the address (?token=…): kept for the tab, taken off the address.
  function tokenFromAddress() {
    const params = new URLSearchParams(location.search);
    const token = params.get("token");
    if (!token) return;
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}`);
    session = { token, name: "ops", role: "ops" };
    Session.set(session);
  }

  // -- the range -----------------------------------------------------------------------

  function rangeFor(kind) {
    if (kind === "today" || !today) return { kind: "today", from: "today", to: "today" };
    const d = dateOf(today);
    if (kind === "yesterday") {
      const y = addDays(today, -1);
      return { kind, from: y, to: y };
    }
    if (kind === "week") {
      const back = (d.getDay() + 6) % 7; // Monday first
      return { kind, from: addDays(today, -back), to: today };
    }
    if (kind === "month") return { kind, from: `${today.slice(0, 7)}-01`, to: today };
    if (kind === "last-month") {
      const first = new Date(d.getFullYear(), d.getMonth() - 1, 1);
      const last = new Date(d.getFullYear(), d.getMonth(), 0);
      return { kind, from: isoDate(first), to: isoDate(last) };
    }
    if (kind === "days30") return { kind, from: addDays(today, -29), to: today };
    return range;
  }

  function choose(kind) {
    range = rangeFor(kind);
    load();
  }

  function pickDates(event) {
    event.preventDefault();
    let from = document.getElementById("from").value;
    let to = document.getElementById("to").value;
    if (!from || !to) {
      say("message", "请选择开始和结束日期", false);
      return;
    }
    if (to < from) [from, to] = [to, from];
    if (Math.round((dateOf(to) - dateOf(from)) / 86400000) + 1 > MAX_DAYS) {
      say("message", `一次最多查询 ${MAX_DAYS} 天，请缩短日期范围`, false);
      return;
    }
    range = { kind: from === today && to === today ? "today" : "custom", from, to };
    load();
  }

  function query(extra) {
    const params = new URLSearchParams({ from: range.from, to: range.to, ...(extra || {}) });
    return `/api/v1/reports?${params}`;
  }

  // -- loading -------------------------------------------------------------------------

  async function load() {
    if (!session) return;
    const asked = query();
    loading = asked;
    let answer;
    try {
      answer = await fetch(asked, { headers: headers() });
    } catch (err) {
      say("message", "无法连接服务，稍后自动重试", false);
      return;
    }
    const reply = await answer.json().catch(() => ({}));
    if (loading !== asked) return; // a newer range was asked for meanwhile
    if (answer.status === 401) {
      signOut("登录已失效，请重新登录");
      return;
    }
    if (answer.status === 403) {
      signOut("此账号无权查看统计报表（需要大厅管理员账号）");
      return;
    }
    if (!answer.ok) {
      say("message", `查询失败（${answer.status}），请稍后再试或缩短日期范围`, false);
      return;
    }
    if (range.kind === "today") today = reply.from;
    say("message", "", true);
    render(reply);
  }

  function scheduleLive() {
    if (liveTimer !== null || !session || range.kind !== "today") return;
    liveTimer = setTimeout(() => {
      liveTimer = null;
      if (range.kind === "today") load();
    }, LIVE_DEBOUNCE_MS);
  }

  // -- exports -------------------------------------------------------------------------

  async function exportAs(format) {
    if (!session || !shown) return;
    say("message", "正在导出…", true);
    const answer = await fetch(query({ from: shown.from, to: shown.to, format }), { headers: headers() })
      .catch(() => null);
    if (!answer || !answer.ok) {
      if (answer && answer.status === 401) signOut("登录已失效，请重新登录");
      else say("message", "导出失败，请稍后再试", false);
      return;
    }
    const blob = await answer.blob();
    const disposition = answer.headers.get("Content-Disposition") || "";
    const found = /filename="([^"]+)"/.exec(disposition);
    const name = found ? found[1] : `report.${format}`;
    const link = el("a", { href: URL.createObjectURL(blob), download: name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    say("message", `已导出 ${name}`, true);
  }

  // -- drawing -------------------------------------------------------------------------

  function render(report) {
    shown = report;
    const root = document.getElementById("report");
    const live = range.kind === "today";
    document.getElementById("live").hidden = !live;
    for (const b of document.querySelectorAll(".shortcuts button")) {
      b.setAttribute("aria-pressed", String(b.dataset.range === range.kind));
    }
    document.getElementById("from").value = report.from;
    document.getElementById("to").value = report.to;
    const time = (report.generated_at || "").slice(11, 16);
    document.getElementById("range-label").textContent = report.from === report.to
      ? `${report.from}${live ? `（今天，截至 ${time}）` : ""}`
      : `${report.from} 至 ${report.to}（共 ${report.days} 天）`;
    kpis(report);
    hours(report.views.hour || []);
    waits(report.views.service || []);
    ratings(report.hall.ratings);
    groupTable("staff", report.views.staff || []);
    groupTable("windows", report.views.window || []);
    badTable(report.bad_ratings || []);
    root.dataset.range = `${report.from}_${report.to}`;
    root.dataset.width = String(window.innerWidth); // drawn for this width
    root.dataset.generated = report.generated_at || "";
  }

  function kpis(report) {
    const h = report.hall;
    const isToday = report.from === today && report.to === today;
    const cards = [
      ["issued", "取号数", num(h.issued), "张"],
      ["served", "接待量", num(h.served), "人"],
      ["wait", "平均等候", minutes(h.wait_minutes.mean), "分钟"],
      ["service", "平均办理", minutes(h.service_minutes.mean), "分钟"],
      ["good-rate", "好评率", percent(h.ratings.good_rate), ""],
      ["bad", "差评", num(h.ratings.bad), "条"],
      ["no-show", "过号", num(h.no_show), "张"],
      isToday ? ["open", "未结", num(h.open), "张"] : ["open", "过期", num(h.expired), "张"],
    ];
    replace("kpis", cards.map(([key, label, value, unit]) => el("div", { class: "kpi", "data-kpi": key },
      el("span", { class: "label" }, label),
      el("span", { class: "value", id: `kpi-${key}` }, value),
      unit ? el("span", { class: "unit" }, unit) : null)));
  }

  function empty(box, text) {
    replace(box, el("p", { class: "empty" }, text));
  }

  // Tickets per hour of the day: a bar per hour, its count on top.
  function hours(groups) {
    const box = document.getElementById("chart-hours");
    const counts = new Map(groups.map((g) => [Number(g.key), g.issued || 0]));
    if (!groups.length) {
      empty(box, "这段时间没有取号");
      return;
    }
    const keys = [...counts.keys()];
    const firstHour = Math.min(8, ...keys);
    const lastHour = Math.max(17, ...keys);
    const hoursShown = [];
    for (let h = firstHour; h <= lastHour; h += 1) hoursShown.push(h);
    const r = rem();
    const width = Math.max(box.clientWidth, 200);
    const height = Math.round(14 * r);
    const pad = { left: 2.6 * r, right: 0.5 * r, top: 1.6 * r, bottom: 1.8 * r };
    const step = niceMax(Math.max(...counts.values(), 1) / 4, true);
    const top = step * Math.ceil(Math.max(...counts.values(), 1) / step);
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const slot = plotW / hoursShown.length;
    const font = Math.max(0.85 * r, 13);
    const parts = [];
    for (let tick = 0; tick <= top; tick += step) {
      const y = pad.top + plotH - (tick / top) * plotH;
      parts.push(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: "grid" }));
      parts.push(svg("text", { x: pad.left - 0.3 * r, y: y + font * 0.35, "text-anchor": "end", class: "axis", "font-size": font }, tick));
    }
    hoursShown.forEach((hour, i) => {
      const value = counts.get(hour) || 0;
      const h = (value / top) * plotH;
      const x = pad.left + i * slot + slot * 0.15;
      const y = pad.top + plotH - h;
      const label = String(hour).padStart(2, "0");
      parts.push(svg("g", { class: "bar", "data-hour": label, "data-value": value },
        svg("rect", { x, y, width: slot * 0.7, height: Math.max(h, 0), rx: 2, fill: "#ffd23f" }),
        value ? svg("text", { x: x + slot * 0.35, y: y - 0.25 * r, "text-anchor": "middle", class: "value", "font-size": font }, value) : null));
      parts.push(svg("text", { x: x + slot * 0.35, y: height - 0.5 * r, "text-anchor": "middle", class: "axis", "font-size": font }, label));
    });
    const summary = hoursShown.filter((h) => counts.get(h)).map((h) => `${h}时 ${counts.get(h)}张`).join("，");
    replace(box, svg("svg", { width, height, role: "img", "aria-label": `各时段取号数：${summary}` }, parts),
      el("p", { class: "caption" }, "横轴：取号时段（时）；纵轴：取号张数"));
  }

  // Waiting time by service: the mean and the P90 (nine in ten waited less), in minutes.
  function waits(groups) {
    const box = document.getElementById("chart-waits");
    const rows = groups.filter((g) => g.wait_minutes.count > 0);
    if (!rows.length) {
      empty(box, "这段时间还没有叫号");
      return;
    }
    const r = rem();
    const width = Math.max(box.clientWidth, 200);
    const labelW = Math.min(11 * r, width * 0.4);
    const rowH = 2.6 * r;
    const height = Math.round(rows.length * rowH + 0.6 * r);
    const font = Math.max(0.85 * r, 13);
    const top = niceMax(Math.max(...rows.map((g) => g.wait_minutes.p90 || 0), 1));
    const plotW = width - labelW - 3.2 * r;
    const parts = [];
    rows.forEach((g, i) => {
      const y = 0.3 * r + i * rowH;
      const mean = g.wait_minutes.mean || 0;
      const p90 = g.wait_minutes.p90 || 0;
      const name = g.name.length > 10 ? `${g.name.slice(0, 9)}…` : g.name;
      parts.push(svg("g", { class: "wait", "data-service": g.key, "data-mean": mean, "data-p90": p90 },
        svg("title", {}, `${g.name}：平均 ${mean.toFixed(1)} 分钟，P90 ${p90.toFixed(1)} 分钟`),
        svg("text", { x: labelW - 0.4 * r, y: y + rowH * 0.45, "text-anchor": "end", class: "axis", "font-size": font }, name),
        svg("rect", { x: labelW, y: y + 0.15 * r, width: (mean / top) * plotW, height: rowH * 0.36, rx: 2, fill: "#ffd23f" }),
        svg("text", { x: labelW + (mean / top) * plotW + 0.3 * r, y: y + 0.15 * r + rowH * 0.3, class: "value", "font-size": font * 0.95 }, mean.toFixed(1)),
        svg("rect", { x: labelW, y: y + 0.2 * r + rowH * 0.4, width: (p90 / top) * plotW, height: rowH * 0.36, rx: 2, fill: "#7fb2ff" }),
        svg("text", { x: labelW + (p90 / top) * plotW + 0.3 * r, y: y + 0.2 * r + rowH * 0.7, class: "value", "font-size": font * 0.95 }, p90.toFixed(1))));
    });
    const summary = rows.map((g) => `${g.name} 平均${g.wait_minutes.mean.toFixed(1)}分钟 P90 ${g.wait_minutes.p90.toFixed(1)}分钟`).join("，");
    replace(box, svg("svg", { width, height, role: "img", "aria-label": `各事项等候时间：${summary}` }, parts),
      el("p", { class: "legend" },
        el("span", { class: "swatch", style: "background:#ffd23f" }), "平均",
        el("span", { class: "swatch", style: "background:#7fb2ff" }), "P90（九成人少于此时间）"));
  }

  // 好差评: a ring of the five levels, 好评率 in the middle, the counts beside it.
  function ratings(figures) {
    const box = document.getElementById("chart-ratings");
    const r = rem();
    const size = Math.round(11 * r);
    const radius = size / 2 - 0.9 * r;
    const ring = 1.6 * r;
    const c = size / 2;
    const parts = [svg("circle", { cx: c, cy: c, r: radius, fill: "none", stroke: "#1d4e89", "stroke-width": ring })];
    const total = figures.count;
    const circumference = 2 * Math.PI * radius;
    let offset = 0;
    for (const { level, color } of LEVELS) {
      const count = figures.levels[level] || 0;
      if (!count) continue;
      const length = (count / total) * circumference;
      parts.push(svg("circle", {
        cx: c, cy: c, r: radius, fill: "none", stroke: color, "stroke-width": ring,
        "stroke-dasharray": `${length} ${circumference - length}`,
        "stroke-dashoffset": -offset, transform: `rotate(-90 ${c} ${c})`, "data-level": level,
      }));
      offset += length;
    }
    parts.push(svg("text", { x: c, y: c - 0.2 * r, "text-anchor": "middle", class: "center", "font-size": 1.6 * r, id: "good-rate" }, percent(figures.good_rate)));
    parts.push(svg("text", { x: c, y: c + 1.2 * r, "text-anchor": "middle", class: "axis", "font-size": 0.8 * r }, "好评率"));
    const summary = LEVELS.map((l) => `${l.name} ${figures.levels[l.level] || 0}`).join("，");
    const legend = el("ul", { class: "levels" }, LEVELS.map((l) => el("li", { "data-level": l.level },
      el("span", { class: "swatch", style: `background:${l.color}` }),
      el("span", { class: "name" }, l.name),
      el("span", { class: "count" }, String(figures.levels[l.level] || 0)))));
    const notes = el("p", { class: "caption" },
      `共 ${total} 条评价，差评 ${figures.bad} 条（${percent(figures.bad_rate)}），参评率 ${percent(figures.rated_share)}`);
    replace(box, el("div", { class: "ring" },
      svg("svg", { width: size, height: size, role: "img", "aria-label": `好差评分布：${summary}；好评率 ${percent(figures.good_rate)}` }, parts),
      legend), notes);
  }

  function groupTable(id, groups) {
    if (!groups.length) {
      replace(id, el("tr", {}, el("td", { colSpan: 11, class: "empty" }, "这段时间没有记录")));
      return;
    }
    replace(id, groups.map((g) => el("tr", { "data-key": g.key },
      el("th", { scope: "row" }, g.name, g.name !== g.key ? el("span", { class: "key" }, g.key) : null),
      el("td", { "data-figure": "served" }, num(g.served)),
      el("td", { "data-figure": "no_show" }, num(g.no_show)),
      el("td", { "data-figure": "transferred" }, num(g.transferred)),
      el("td", { "data-figure": "service_mean" }, minutes(g.service_minutes.mean)),
      el("td", { "data-figure": "wait_mean" }, minutes(g.wait_minutes.mean)),
      el("td", { "data-figure": "ratings" }, num(g.ratings.count)),
      el("td", { "data-figure": "good_rate" }, percent(g.ratings.good_rate)),
      el("td", { "data-figure": "bad", class: g.ratings.bad ? "warn" : "" }, num(g.ratings.bad)),
      el("td", { "data-figure": "on_duty" }, duration(g.on_duty_minutes)),
      el("td", { "data-figure": "paused" }, duration(g.paused_minutes)))));
  }

  function badTable(given) {
    // The newest first: what to follow up now is at the top.
    const rows = [...given].sort((a, b) => (b.rated_at || b.day).localeCompare(a.rated_at || a.day));
    document.getElementById("bad-count").textContent = `共 ${rows.length} 条`;
    if (!rows.length) {
      replace("bad", el("tr", {}, el("td", { colSpan: 9, class: "empty" }, "这段时间没有差评")));
      return;
    }
    replace("bad", rows.map((b) => el("tr", { "data-ticket": b.ticket, "data-day": b.day },
      el("td", {}, b.day),
      el("td", {}, b.rated_at ? b.rated_at.slice(11, 16) : "—"),
      el("th", { scope: "row" }, b.ticket),
      el("td", {}, b.service_name || b.service),
      el("td", {}, b.window_name || b.window || "—"),
      el("td", {}, b.staff_name || b.staff || "—"),
      el("td", { class: "warn" }, LEVEL_NAMES[String(b.level)] || String(b.level)),
      el("td", {}, (b.reasons || []).join("、") || "—"),
      el("td", {}, b.comment || "—"))));
  }

  // The smallest round number (1, 2, 2.5 or 5 times a power of ten) at least value;
  // whole (at least 1, no 2.5) when counting.
  function niceMax(value, whole) {
    if (whole && value <= 1) return 1;
    const magnitude = 10 ** Math.floor(Math.log10(value));
    for (const m of whole ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]) {
      if (m * magnitude >= value && (!whole || Number.isInteger(m * magnitude))) return m * magnitude;
    }
    return 10 * magnitude;
  }

  // -- start ---------------------------------------------------------------------------

  function start() {
    tokenFromAddress();
    DeskLogin.attach({
      roles: ["manager"],
      wrongRole: "此账号不是大厅管理员账号，不能查看统计报表",
      onSession: signedIn,
    });
    document.getElementById("logout").addEventListener("click", logout);
    document.getElementById("dates").addEventListener("submit", pickDates);
    for (const b of document.querySelectorAll(".shortcuts button")) {
      b.addEventListener("click", () => choose(b.dataset.range));
    }
    document.getElementById("export-csv").addEventListener("click", () => exportAs("csv"));
    document.getElementById("export-xlsx").addEventListener("click", () => exportAs("xlsx"));
    let resized = null;
    window.addEventListener("resize", () => {
      clearTimeout(resized);
      resized = setTimeout(() => { if (shown) render(shown); }, 100);
    });
    show();
    HallPages.startClock("clock");
    // The hall changes (a ticket, a call, a rating): today's figures are fetched again.
    HallPages.connect("kiosk", HallPages.pageParams(), (state) => {
      HallPages.applyCommon(state);
      document.title = `统计报表 · ${state.hall ? state.hall.name : ""}`;
      scheduleLive();
    });
    setInterval(() => { if (range.kind === "today") load(); }, LIVE_POLL_MS);
    load();
  }

  return { start };
})();

Manager.start();

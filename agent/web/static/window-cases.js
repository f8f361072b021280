"use strict";
// The window page's proxy-case reminder (代收代办到期提醒): the window's cases near or past
// their promised date (GET /api/v1/windows/{w}/cases?due=due, docs/cases.md). Shown only
// when the page was opened with a credential of that window (?token= of its caller page,
// or a staff session token), kept for this tab; no personal data is shown.
(() => {
  const KEY = "hall-window-cases-token";
  const given = new URLSearchParams(location.search).get("token");
  if (given) {
    sessionStorage.setItem(KEY, given);
    const here = new URL(location.href);
    here.searchParams.delete("token");
    history.replaceState(null, "", here);
  }
  const token = sessionStorage.getItem(KEY);
  const panel = document.getElementById("cases-due");
  if (!token || !panel) return;
  const windowId = decodeURIComponent(location.pathname.split("/").pop());
  const { el, replace } = HallPages;
  const TEXT = { near: "即将到期", overdue: "已超期" };

  async function load() {
    try {
      const answer = await fetch(`/api/v1/windows/${encodeURIComponent(windowId)}/cases?due=due`,
        { headers: { Authorization: `Bearer ${token}` } });
      if (!answer.ok) { panel.hidden = true; return; }
      const reply = await answer.json();
      panel.hidden = reply.cases.length === 0;
      replace(panel, el("h2", {}, `代收代办到期提醒（${reply.cases.length}）`),
        el("ul", { class: "cases-due-list" }, reply.cases.map((c) =>
          el("li", { "data-case": c.number, "data-due": c.due },
            `${c.number} · ${c.service_name} · 承诺 ${c.promised_text} · ${TEXT[c.due] || ""}`))));
    } catch (err) {
      panel.hidden = true;
    }
  }
  load();
  setInterval(load, 60000);
})();

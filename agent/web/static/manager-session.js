// One sign-in for the manager's pages (/pages/manager, /pages/manager/content,
// /pages/manager/staff, /pages/manager/cases; docs/pages.md): a manager (or the ops
// person) logs in once per browser tab and moves between them through the nav. The session
// ({token, name, role}) is kept in this tab's sessionStorage under one key; logging out on
// any of the pages ends it on all of them.
"use strict";

const HallManagerSession = (() => {
  const KEY = "hall-manager-session";
  return {
    KEY,
    get() {
      try { return JSON.parse(sessionStorage.getItem(KEY) || "null"); } catch (err) { return null; }
    },
    set(session) { sessionStorage.setItem(KEY, JSON.stringify(session)); },
    clear() { sessionStorage.removeItem(KEY); },
    // One call to the hall's API as ``session``: {ok, status, reply}; a body that is a
    // Blob goes as it is (an image upload), anything else as JSON. Pages handle 401/403.
    async request(session, method, path, body, extraHeaders) {
      const headers = { Authorization: `Bearer ${session ? session.token : ""}`, ...(extraHeaders || {}) };
      let payload;
      if (body instanceof Blob) payload = body;
      else if (body !== undefined) { headers["Content-Type"] = "application/json"; payload = JSON.stringify(body); }
      let answer;
      try {
        answer = await fetch(path, { method, headers, body: payload });
      } catch (err) {
        return { ok: false, status: 0, reply: { message: "连不上本机服务，请检查网络后再试" } };
      }
      let reply = {};
      try { reply = await answer.json(); } catch (err) { reply = {}; }
      return { ok: answer.ok, status: answer.status, reply };
    },
  };
})();

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
    // The sign-in of a manager's editing page (content, staff): a page with #login-panel,
    // #editor, #who and #logout, and desk-login.js loaded. Shows the editor once signed in
    // and then calls ``load``; a 401 signs out and asks to log in again; a 403 says which
    // right is missing (``what``, e.g. 编辑屏幕内容). Returns the page's
    // call(method, path, body, extraHeaders), answered as ``request`` answers.
    editor({ what, load }) {
      const Session = HallManagerSession;
      const $ = (id) => document.getElementById(id);
      let session = Session.get();
      const show = () => {
        const on = Boolean(session);
        $("login-panel").hidden = on;
        $("editor").hidden = !on;
        if (on) {
          $("who").textContent = session.role === "ops" ? "运维人员" : `管理员 ${session.name}`;
          load();
        }
      };
      const call = async (method, path, body, extraHeaders) => {
        const result = await Session.request(session, method, path, body, extraHeaders);
        if (result.status === 401) {
          session = null;
          Session.clear();
          show();
          DeskLogin.expired();
        } else if (result.status === 403) {
          result.reply.message = `此账号没有${what}的权限（需要管理员账号）`;
        }
        return result;
      };
      DeskLogin.attach({
        roles: ["manager"],
        wrongRole: `此账号不是管理员账号，不能${what}`,
        onSession(signedIn) {
          session = { token: signedIn.token, name: signedIn.name, role: signedIn.role };
          Session.set(session);
          show();
        },
      });
      $("logout").addEventListener("click", async () => {
        await call("POST", "/api/v1/auth/logout");
        session = null;
        Session.clear();
        show();
      });
      queueMicrotask(show);  // after the page has its ``call`` (its load uses it)
      return call;
    },
  };
})();

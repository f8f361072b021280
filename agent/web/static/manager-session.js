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
  };
})();

// The one login form of the desk and manager pages (docs/pages.md): the guide desk, the
// manager's report, content, staff and cases pages. Each page has an empty
// <section class="panel" id="login-panel" data-title="…" data-title-en="…" data-name="…">
// (what it may hold stays below the form) and says which roles it takes; the form (#login
// with #login-name and #login-password, and #login-message for what went wrong) and
// everything about signing in are here, so every page answers a wrong password, too many
// tries, a lost connection or an account of the wrong role alike.
"use strict";

const DeskLogin = (() => {
  // The form, built into #login-panel when this script loads (before the page's own).
  (function build() {
    const panel = document.getElementById("login-panel");
    const { el } = HallPages;
    const title = el("h2", { id: "login-title" }, panel.dataset.title || "登录");
    if (panel.dataset.titleEn) title.append(" ", el("span", { class: "en" }, panel.dataset.titleEn));
    const field = (id, label, attrs) => [
      el("label", { htmlFor: id }, label),
      el("input", { id, required: true, ...attrs }),
    ];
    const form = el("form", { id: "login" },
      ...field("login-name", panel.dataset.name || "账号", { name: "name", autocomplete: "username" }),
      ...field("login-password", "密码",
        { name: "password", type: "password", autocomplete: "current-password" }),
      el("p", {}, el("button", { type: "submit", class: "primary", id: "login-submit" }, "登录")));
    panel.setAttribute("aria-labelledby", "login-title");
    panel.prepend(title, form);
    panel.append(el("div", { class: "desk-message", id: "login-message", role: "alert" }));
  })();

  function say(text, ok) {
    const node = document.getElementById("login-message");
    node.textContent = text;
    node.className = `desk-message ${ok ? "ok" : "error"}`;
  }

  // Wires the page's form. ``roles``: the roles this page opens for; ``wrongRole``: what an
  // account of another role is told (its new session is ended at once: it opens nothing
  // here); ``onSession({token, name, role, windows})``: called on success.
  function attach({ roles, wrongRole, onSession, wrongPassword = "账号或密码不正确" }) {
    document.getElementById("login").addEventListener("submit", async (event) => {
      event.preventDefault();
      const name = document.getElementById("login-name").value.trim();
      const password = document.getElementById("login-password").value;
      let answer;
      try {
        answer = await fetch("/api/v1/auth/login", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ name, password }),
        });
      } catch (err) {
        say("连不上本机服务，请检查网络后再试", false);
        return;
      }
      const reply = await answer.json().catch(() => ({}));
      document.getElementById("login-password").value = "";
      if (!answer.ok) {
        say(answer.status === 429 ? "尝试次数过多，请稍后再试" : wrongPassword, false);
        return;
      }
      if (!roles.includes(reply.role)) {
        fetch("/api/v1/auth/logout", {
          method: "POST", headers: { Authorization: `Bearer ${reply.token}` },
        }).catch(() => null);
        say(wrongRole, false);
        return;
      }
      say("", true);
      onSession({ token: reply.token, name: reply.name, role: reply.role, windows: reply.windows });
    });
  }

  // The session ended (401): back to the form, saying why.
  function expired() { say("登录已失效，请重新登录", false); }

  return { attach, say, expired };
})();

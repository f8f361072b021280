// The one login form of the desk and manager pages (docs/pages.md): the guide desk, the
// manager's report, content, staff and cases pages. Each page has the same form (#login
// with #login-name and #login-password, and #login-message for what went wrong) and says
// which roles it takes; everything else about signing in is here, so every page answers a
// wrong password, too many tries, a lost connection or an account of the wrong role alike.
"use strict";

const DeskLogin = (() => {
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

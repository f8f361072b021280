// The manager's staff page (/pages/manager/staff; docs/pages.md): the roster the big
// screen's staff board shows (工号, name, photo, windows), the shifts of a day (name, start,
// end) and the week's rota (A and B per window, weekday and shift), saved through PUT /api/v1/staffing and checked there exactly
// as the config file's staff and rota are. Shares the manager's sign-in with the other
// manager pages (manager-session.js).
"use strict";

(() => {
  const { el, replace } = HallPages;
  const Session = HallManagerSession;
  const DAY_NAMES = { mon: "周一", tue: "周二", wed: "周三", thu: "周四", fri: "周五", sat: "周六", sun: "周日" };
  let call = null;  // the signed-in API call (Session.editor), set once the page is wired
  let board = null;  // GET /api/v1/staffing
  let members = [];  // [{staff, name, windows, photo}]
  const $ = (id) => document.getElementById(id);

  function say(text, ok, problems) {
    const node = $("message");
    node.textContent = text;
    node.className = `desk-message ${ok ? "ok" : "error"}`;
    replace("problems", (problems || []).map((p) => el("li", {}, p)));
  }


  // -- the roster --------------------------------------------------------------------------

  function windowName(id) {
    const w = board.windows.find((x) => x.id === id);
    return w ? w.name : id;
  }

  function renderRoster() {
    replace("roster", members.map((m, i) => {
      const number = el("input", { class: "number", value: m.staff, ariaLabel: `第 ${i + 1} 行 工号`, autocomplete: "off" });
      number.addEventListener("input", () => { m.staff = number.value.trim(); renderRota(); });
      const name = el("input", { class: "name", value: m.name, ariaLabel: `第 ${i + 1} 行 姓名`, autocomplete: "off" });
      name.addEventListener("input", () => { m.name = name.value.trim(); renderRota(); });
      const file = el("input", { type: "file", accept: "image/png,image/jpeg,image/gif,image/webp", ariaLabel: `${m.name || `第 ${i + 1} 行`} 的照片` });
      file.addEventListener("change", () => upload(m, file));
      const photo = el("td", {},
        m.photo ? el("img", { src: `/pages/content/images/${m.photo}`, alt: `${m.name} 的照片` }) : null,
        file,
        m.photo ? clearPhoto(m) : null);
      const windows = el("td", { class: "windows" }, board.windows.map((w) => {
        const box = el("input", { type: "checkbox", checked: m.windows.includes(w.id) });
        box.addEventListener("change", () => {
          m.windows = board.windows.map((x) => x.id).filter((id) => (id === w.id ? box.checked : m.windows.includes(id)));
        });
        return el("label", {}, box, windowName(w.id));
      }));
      const del = el("button", { type: "button", "data-action": "delete" }, "删除");
      del.addEventListener("click", () => { members.splice(i, 1); renderRoster(); renderRota(); });
      return el("tr", { "data-staff": m.staff }, el("td", {}, number), el("td", {}, name), photo, windows, el("td", {}, del));
    }));
  }

  function clearPhoto(m) {
    const button = el("button", { type: "button" }, "不用照片");
    button.addEventListener("click", () => { m.photo = null; renderRoster(); });
    return button;
  }

  async function upload(member, input) {
    const file = input.files[0];
    if (!file) return;
    say("正在检查并上传照片…", true);
    const { ok, reply } = await call("POST", "/api/v1/content/images", file, {
      "Content-Type": "application/octet-stream", "X-File-Name": encodeURIComponent(file.name),
    });
    if (!ok) { say(`照片未上传：${reply.message || "请重试"}`, false); input.value = ""; return; }
    member.photo = reply.id;
    say(`照片已上传（${reply.width}×${reply.height}），保存后在大屏上显示`, true);
    renderRoster();
  }

  $("add-member").addEventListener("click", () => {
    members.push({ staff: "", name: "", windows: [], photo: null });
    renderRoster();
    renderRota();
    const inputs = $("roster").querySelectorAll("input.number");
    inputs[inputs.length - 1].focus();
  });

  // -- the shifts of a day: name, start and end, edited in place ---------------------------

  let shifts = [];  // [{id, name, start: "HH:MM", end: "HH:MM"}], what is saved

  const minutes = (hhmm) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));
  const hhmm = (total) => `${String(Math.floor(total / 60)).padStart(2, "0")}:${String(total % 60).padStart(2, "0")}`;

  function renderShifts() {
    replace("shifts", shifts.map((s, i) => {
      const name = el("input", { class: "shift-name", value: s.name, maxLength: 16, required: true, ariaLabel: `第 ${i + 1} 个班次的名称` });
      name.addEventListener("input", () => { s.name = name.value.trim(); });
      name.addEventListener("change", () => renderRota());
      const times = ["start", "end"].map((key) => {
        const input = el("input", {
          type: "time", value: s[key], step: s[key].length > 5 ? 1 : 60, required: true,
          ariaLabel: `${s.name} ${key === "start" ? "开始" : "结束"}时间`,
        });
        input.addEventListener("input", () => { s[key] = input.value; });
        input.addEventListener("change", () => renderRota());
        return el("td", {}, input);
      });
      const del = el("button", { type: "button", "data-action": "delete-shift", disabled: shifts.length === 1 }, "删除");
      del.addEventListener("click", () => { shifts.splice(i, 1); renderShifts(); renderRota(); });
      return el("tr", { "data-shift": s.id }, el("td", {}, name), ...times, el("td", {}, del));
    }));
  }

  $("add-shift").addEventListener("click", () => {
    const last = shifts.length ? minutes(shifts[shifts.length - 1].end) : 9 * 60;
    const start = Math.min(last, 22 * 60);
    let n = shifts.length + 1;
    while (shifts.some((s) => s.id === `shift-${n}`)) n += 1;
    shifts.push({ id: `shift-${n}`, name: `班次${n}`, start: hhmm(start), end: hhmm(Math.min(start + 120, 23 * 60 + 59)) });
    renderShifts();
    renderRota();
    const names = $("shifts").querySelectorAll("input.shift-name");
    names[names.length - 1].focus();
  });

  // What the page itself can tell before saving; overlaps and the rest are the server's.
  function shiftProblems() {
    const problems = [];
    for (const s of shifts) {
      if (!s.name) problems.push("有班次没有名称，请填写");
      if (!s.start || !s.end) problems.push(`${s.name || "班次"}：请填写开始和结束时间`);
      else if (minutes(s.end) <= minutes(s.start)) problems.push(`${s.name}：结束时间 ${s.end} 要晚于开始时间 ${s.start}`);
    }
    return problems;
  }

  // -- the rota: a grid per window, weekdays across, shifts down, A and B in each cell -------

  let grid = {};  // "window/day/shift" -> {a, b}

  function cellOf(window, day, shift) {
    const key = `${window}/${day}/${shift}`;
    if (!grid[key]) grid[key] = { a: "", b: "" };  // a shift added on the page
    return grid[key];
  }

  function postOf(rota, window, day, shift) {
    for (const entry of rota.week) {
      const covers = !entry.shifts.length || entry.shifts.includes(shift);
      if (entry.window === window && entry.days.includes(day) && covers) return entry;
    }
    return rota.posts.find((p) => p.window === window) || null;
  }

  function gridFrom(rota) {
    grid = {};
    for (const w of board.windows) {
      for (const day of board.weekdays) {
        for (const shift of rota.shifts) {
          const post = postOf(rota, w.id, day, shift.id);
          grid[`${w.id}/${day}/${shift.id}`] = { a: post ? post.a : "", b: post && post.b ? post.b : "" };
        }
      }
    }
  }

  function chooser(label, value, set) {
    const select = el("select", { ariaLabel: label },
      el("option", { value: "" }, "—"),
      members.filter((m) => m.staff).map((m) => el("option", { value: m.staff, selected: m.staff === value }, `${m.name || m.staff}（${m.staff}）`)));
    if (value && !members.some((m) => m.staff === value)) {
      select.append(el("option", { value, selected: true }, `${value}（不在名单中）`));
    }
    select.addEventListener("change", () => set(select.value));
    return select;
  }

  function renderRota() {
    replace("rota", board.windows.map((w) => el("table", { "data-window": w.id },
      el("caption", {}, windowName(w.id)),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "班次"), board.weekdays.map((d) => el("th", { scope: "col" }, DAY_NAMES[d])))),
      el("tbody", {}, shifts.map((s) => el("tr", {},
        el("th", { scope: "row" }, `${s.name} ${s.start}-${s.end}`),
        board.weekdays.map((d) => {
          const cell = cellOf(w.id, d, s.id);
          const where = `${windowName(w.id)} ${DAY_NAMES[d]} ${s.name}`;
          return el("td", { "data-cell": `${w.id}/${d}/${s.id}` }, el("div", { class: "cell" },
            el("span", { ariaHidden: "true" }, "A"), chooser(`${where} A岗`, cell.a, (v) => { cell.a = v; }),
            el("span", { ariaHidden: "true" }, "B"), chooser(`${where} B岗`, cell.b, (v) => { cell.b = v; })));
        })))))));
  }

  // The grid as the config's rota: per window and shift, the days with the same A and B.
  function rotaOf() {
    const week = [];
    const problems = [];
    for (const w of board.windows) {
      for (const s of shifts) {
        const groups = new Map();
        for (const d of board.weekdays) {
          const cell = cellOf(w.id, d, s.id);
          if (!cell.a) {
            if (cell.b) problems.push(`${windowName(w.id)} ${DAY_NAMES[d]} ${s.name}：选了 B 岗但没有 A 岗，请先选 A 岗`);
            continue;
          }
          const key = `${cell.a}/${cell.b}`;
          if (!groups.has(key)) groups.set(key, { window: w.id, days: [], shifts: [s.id], a: cell.a, b: cell.b || null });
          groups.get(key).days.push(d);
        }
        week.push(...groups.values());
      }
    }
    return { rota: { shifts, posts: [], week }, problems: [...shiftProblems(), ...problems] };
  }

  $("save").addEventListener("click", async () => {
    const { rota, problems } = rotaOf();
    if (problems.length) { say("排班未保存：", false, problems); return; }
    const staff = members.map((m) => ({ staff: m.staff, name: m.name, windows: m.windows, photo: m.photo || null }));
    const { ok, reply } = await call("PUT", "/api/v1/staffing", { staff, rota });
    if (!ok) {
      say(`未保存：${reply.problems ? "有以下问题，请改正后再保存" : reply.message || "请重试"}`, false, reply.problems);
      return;
    }
    show(reply);
    say("已保存，大屏的服务人员公示已更新", true);
  });

  // -- loading -----------------------------------------------------------------------------

  function show(reply) {
    board = reply;
    members = reply.staff.map((m) => ({ ...m, windows: [...m.windows] }));
    const when = reply.edited_at ? reply.edited_at.slice(0, 16).replace("T", " ") : "";
    const by = reply.source === "hall" ? `（${reply.edited_by}，${when}）` : "";
    replace("source", "当前人员和排班来源：", el("strong", { id: "source-name", "data-source": reply.source }, reply.source_name), by);
    // HH:MM, or HH:MM:SS where the seconds say something (23:59:59): nothing changes unasked.
    const clock = (t) => (t.length > 5 && t.slice(5, 8) !== ":00" ? t.slice(0, 8) : t.slice(0, 5));
    shifts = reply.rota.shifts.map((s) => ({ id: s.id, name: s.name, start: clock(s.start), end: clock(s.end) }));
    gridFrom(reply.rota);
    renderShifts();
    renderRoster();
    renderRota();
  }

  async function load() {
    const { ok, reply } = await call("GET", "/api/v1/staffing");
    if (ok) show(reply);
    else if (reply.message) say(reply.message, false);
  }

  HallPages.startClock("clock");
  HallPages.connect("hall", {}, (state) => { HallPages.applyCommon(state); });
  call = Session.editor({ what: "编辑人员排班", load: load });
})();

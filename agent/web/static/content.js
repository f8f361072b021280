// The manager's screen content page (/pages/manager/content; docs/screens.md): a manager
// logs in (role manager; docs/security.md) and adds, edits and deletes the hall's notices
// (通知公告), community news (社区动态) and job information (招聘信息) with their images,
// through the guarded local API. The session token is kept for this tab only.
"use strict";

(() => {
  const { el, replace } = HallPages;
  const Session = HallManagerSession;  // one sign-in for every manager page (manager-session.js)
  const KINDS = {
    notice: { api: "/api/v1/notices", list: "notices", name: "通知公告", body: "notice-list" },
    news: { api: "/api/v1/content/news", list: "news", name: "社区动态", body: "news-list" },
    job: { api: "/api/v1/content/jobs", list: "jobs", name: "招聘信息", body: "job-list" },
  };
  let call = null;  // the signed-in API call (Session.editor), set once the page is wired
  let editing = null;  // {kind, id} of the item in the form, null: a new one
  let image = null;  // {id, url} of the form's image
  const items = { notice: [], news: [], job: [] };
  const $ = (id) => document.getElementById(id);

  function say(id, text, ok) {
    const node = $(id);
    node.textContent = text;
    node.className = `desk-message ${ok ? "ok" : "error"}`;
  }


  // -- the lists ---------------------------------------------------------------------------

  function when(item) {
    const short = (t) => (t ? t.slice(0, 16).replace("T", " ") : "");
    if (!item.starts_at && !item.ends_at) return "一直显示";
    return `${short(item.starts_at) || "现在"} 至 ${short(item.ends_at) || "不限"}`;
  }

  function actions(kind, item) {
    const edit = el("button", { type: "button", "data-action": "edit" }, "修改");
    edit.addEventListener("click", () => startEdit(kind, item));
    const del = el("button", { type: "button", "data-action": "delete" }, "删除");
    del.addEventListener("click", () => remove(kind, item));
    return el("td", {}, edit, del);
  }

  async function loadKind(kind) {
    const { ok, reply } = await call("GET", KINDS[kind].api);
    if (!ok) return;
    items[kind] = reply[KINDS[kind].list] || [];
    replace(KINDS[kind].body, items[kind].map((item) => el("tr", { "data-id": item.id },
      kind === "notice" ? null : el("td", {}, item.image_url ? el("img", { src: item.image_url, alt: item.title }) : "无"),
      el("td", {}, kind === "notice" ? item.text : item.title),
      el("td", {}, String(item.priority)),
      el("td", {}, when(item)),
      el("td", {}, `${item.edited_by} ${item.edited_at.slice(5, 16).replace("T", " ")}`),
      actions(kind, item))));
    if (kind === "notice") {
      const central = reply.central || [];
      $("central-notices").textContent = central.length
        ? `上级（中心）下发的通知 ${central.length} 条，在大屏上标为【上级通知】，此处不能修改：${central.map((n) => n.text).join("；")}`
        : "";
    }
  }

  async function loadImages() {
    const { ok, reply } = await call("GET", "/api/v1/content/images");
    if (!ok) return;
    const mb = (b) => `${(b / 1048576).toFixed(1)} MB`;
    $("image-limits").textContent = `单张不超过 ${mb(reply.image_max_bytes)}，每边不超过 ${reply.image_max_side} 像素；上传后自动缩放到大屏所需大小。`;
    $("images-usage").textContent = `已用 ${mb(reply.used_bytes)}，上限 ${mb(reply.max_bytes)}。`;
    replace("image-list", reply.images.map((img) => {
      const del = el("button", { type: "button", "data-action": "delete" }, "删除");
      del.addEventListener("click", async () => {
        const { ok: done, reply: r } = await call("DELETE", `/api/v1/content/images/${img.id}`);
        say("message", done ? `已删除图片“${img.name}”` : `未能删除：${r.message || ""}`, done);
        loadImages();
      });
      return el("tr", { "data-id": img.id },
        el("td", {}, el("img", { src: img.url, alt: img.name })),
        el("td", {}, img.name),
        el("td", {}, `${img.width}×${img.height}，${mb(img.bytes)}`),
        el("td", {}, img.used_by.length ? img.used_by.map((u) => u.title).join("、") : "未使用"),
        el("td", {}, del));
    }));
  }

  function loadAll() {
    for (const kind of Object.keys(KINDS)) loadKind(kind);
    loadImages();
  }

  // -- the form ----------------------------------------------------------------------------

  function kindChanged() {
    const kind = $("kind").value;
    const notice = kind === "notice";
    $("title-field").hidden = notice;
    $("image-field").hidden = notice;
    $("title").required = !notice;
    $("text").maxLength = notice ? 200 : 300;
    $("text-label").textContent = notice ? "通知内容（不超过 200 字）" : "正文（不超过 300 字）";
    preview();
  }
  $("kind").addEventListener("change", kindChanged);

  function setImage(found) {
    image = found;
    $("image-clear").hidden = !found;
    replace("image-preview", found ? el("img", { src: found.url, alt: "配图预览", id: "image-shown" }) : []);
    preview();
  }
  $("image-clear").addEventListener("click", () => { setImage(null); $("image-file").value = ""; });

  $("image-file").addEventListener("change", async () => {
    const file = $("image-file").files[0];
    if (!file) return;
    say("message", `正在上传“${file.name}”…`, true);
    const { ok, reply } = await call("POST", "/api/v1/content/images", file, {
      "Content-Type": "application/octet-stream", "X-File-Name": encodeURIComponent(file.name),
    });
    $("image-file").value = "";
    if (!ok) { say("message", `图片未上传：${reply.message || "请换一张图片再试"}`, false); return; }
    setImage({ id: reply.id, url: reply.url });
    say("message", `图片已上传（${reply.width}×${reply.height}），保存后在大屏显示`, true);
    loadImages();
  });

  function startEdit(kind, item) {
    editing = { kind, id: item.id };
    $("kind").value = kind;
    $("kind").disabled = true;
    $("title").value = item.title || "";
    $("text").value = item.text || "";
    $("priority").value = String(item.priority);
    $("starts").value = (item.starts_at || "").slice(0, 16);
    $("ends").value = (item.ends_at || "").slice(0, 16);
    $("form-title").textContent = `修改${KINDS[kind].name}`;
    $("cancel").hidden = false;
    kindChanged();
    setImage(item.image ? { id: item.image, url: item.image_url } : null);
    $("text").focus();
  }

  function resetForm() {
    editing = null;
    $("item-form").reset();
    $("kind").disabled = false;
    $("form-title").textContent = "新增内容";
    $("cancel").hidden = true;
    setImage(null);
    kindChanged();
  }
  $("cancel").addEventListener("click", resetForm);

  async function remove(kind, item) {
    const { ok, reply } = await call("DELETE", `${KINDS[kind].api}/${item.id}`);
    say("message", ok ? `已删除${KINDS[kind].name}，大屏上随即消失` : `未能删除：${reply.message || ""}`, ok);
    if (editing && editing.id === item.id) resetForm();
    loadKind(kind);
    loadImages();
  }

  $("item-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const kind = editing ? editing.kind : $("kind").value;
    const body = {
      text: $("text").value.trim(),
      priority: Number($("priority").value || 0),
      starts_at: $("starts").value || null,
      ends_at: $("ends").value || null,
    };
    if (kind !== "notice") { body.title = $("title").value.trim(); body.image = image ? image.id : null; }
    const path = editing ? `${KINDS[kind].api}/${editing.id}` : KINDS[kind].api;
    const { ok, reply } = await call(editing ? "PUT" : "POST", path, body);
    if (!ok) { say("message", `未保存：${reply.message || ""}`, false); return; }
    say("message", `已保存${KINDS[kind].name}，大屏随即更新`, true);
    resetForm();
    loadKind(kind);
    loadImages();
  });

  // -- the preview: the item in the form, as the big screen shows it -----------------------

  function preview() {
    const kind = $("kind").value;
    const text = $("text").value.trim() || "（内容）";
    if (kind === "notice") {
      replace("preview", el("div", { class: "notices" }, text));
      return;
    }
    replace("preview", el("section", { class: "panel bulletin" },
      el("h2", {}, KINDS[kind].name),
      el("div", { class: "item" },
        image ? el("img", { src: image.url, alt: "配图" }) : null,
        el("div", { class: "words" },
          el("div", { class: "title" }, $("title").value.trim() || "（标题）"),
          el("p", { class: "text" }, text)))));
  }
  for (const id of ["title", "text"]) $(id).addEventListener("input", preview);

  kindChanged();
  call = Session.editor({ what: "编辑屏幕内容", load: loadAll });
  HallPages.startClock("clock");
  HallPages.connect("hall", {}, (state) => { HallPages.applyCommon(state); });
})();

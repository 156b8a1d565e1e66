"use strict";
// The dashboard: one bearer token (kept for this browser session), one live event stream read with fetch.
const T = {
  zh: { title: "网关", offline: "离线", live: "实时", token: "访问令牌", signin: "登录", tokenhint: "用 tiyi api token add NAME 生成",
    in: "接收 条/秒", out: "送达 条/秒", unacked: "待确认记录", unpub: "待发布批次", anchors: "待上链", journal: "日志记录",
    devices: "设备", id: "编号", state: "状态", battery: "电量", reading: "最新读数", records: "记录数",
    pairnew: "配对新设备", pair: "配对", batches: "批次与上链", batch: "批次", seqs: "序号", anchor: "上链状态", proof: "证明",
    paired: "已配对", badtoken: "令牌无效", download: "下载",
    st_connected: "已连接", st_seen: "在线", st_paired: "已配对（未见）",
    broker_down: "消息代理断开：数据暂存本地日志", chain_down: "区块链不可用：上链暂停，稍后重试",
    disk_filling: "磁盘空间不足：日志即将无法写入", device_silent: "设备无数据", clock_jump: "系统时钟跳变",
    key_not_registered: "签名密钥未在链上登记",
    anc_pending: "待上链", anc_signed: "已签名，待发送", anc_submitted: "已提交，待入块", anc_included: "已入块，确认中",
    anc_final: "已上链确认", anc_failed: "上链失败" },
  en: { title: "Gateway", offline: "offline", live: "live", token: "Access token", signin: "Sign in", tokenhint: "made with tiyi api token add NAME",
    in: "In, records/s", out: "Delivered, records/s", unacked: "Unacknowledged records", unpub: "Unpublished batches", anchors: "Anchors pending", journal: "Journal records",
    devices: "Devices", id: "ID", state: "State", battery: "Battery", reading: "Last reading", records: "Records",
    pairnew: "Pair a new device", pair: "Pair", batches: "Batches and anchors", batch: "Batch", seqs: "Seqs", anchor: "Anchor", proof: "Proof",
    paired: "paired", badtoken: "token not valid", download: "download",
    st_connected: "connected", st_seen: "seen", st_paired: "paired (not seen)",
    broker_down: "Broker down: data waits in the journal", chain_down: "Chain down: anchoring paused, retrying",
    disk_filling: "Disk filling: the journal will soon refuse data", device_silent: "Device silent", clock_jump: "System clock jumped",
    key_not_registered: "Signing key not registered on chain",
    anc_pending: "pending", anc_signed: "signed, not sent", anc_submitted: "submitted", anc_included: "in a block, confirming",
    anc_final: "final", anc_failed: "failed" },
};
let lang = (localStorage.getItem("tiyi-lang") || (navigator.language || "zh").slice(0, 2)) === "en" ? "en" : "zh";
let token = sessionStorage.getItem("tiyi-token") || "";
let last = null;
const $ = (id) => document.getElementById(id);
const t = (k) => T[lang][k] || k;
const cell = (text, cls) => { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; };

function applyLang() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  $("lang").textContent = lang === "zh" ? "EN" : "中文";
  if (last) render(last);
}

function reading(r) {
  if (!r) return "–";
  const num = (v) => (typeof v === "number" ? +v.toFixed(2) : Array.isArray(v) ? v.map(num).join(" ") : v);
  const vals = Object.entries(r.val || {}).map(([k, v]) => `${k} ${num(v)}`).join(", ");
  const age = Math.max(0, Math.round((Date.now() - r.t) / 1000));
  return `${r.kind || "?"}: ${vals} (${age}s)`;
}

function render(s) {
  last = s;
  $("gw").textContent = s.gateway;
  $("rin").textContent = s.throughput.records_in_per_s;
  $("rout").textContent = s.throughput.records_out_per_s;
  $("unacked").textContent = s.backlog.unacknowledged_records;
  $("unpub").textContent = s.backlog.unpublished_batches;
  $("anchors").textContent = s.backlog.open_anchors;
  $("journal").textContent = s.backlog.journal_records;
  const al = $("alarms"); al.replaceChildren();
  for (const a of s.alarms) {
    const div = document.createElement("div"); div.className = "alarm"; div.dataset.code = a.code;
    div.textContent = t(a.code);
    if (a.devices) { const sm = document.createElement("small"); sm.textContent = a.devices.join(", "); div.append(sm); }
    al.append(div);
  }
  const dt = $("devices").tBodies[0]; dt.replaceChildren();
  for (const d of s.devices) {
    const tr = document.createElement("tr"); tr.dataset.id = d.id;
    tr.append(cell(d.id + (d.paired ? " ✓" : ""), "mono"), cell(t("st_" + d.state), "st-" + d.state),
      cell(d.battery == null ? "–" : d.battery + "%"), cell(reading(d.last_reading), "reading"), cell(d.records));
    dt.append(tr);
  }
  const bt = $("batches").tBodies[0]; bt.replaceChildren();
  for (const b of s.batches) {
    const tr = document.createElement("tr");
    const link = document.createElement("a"); link.href = b.proof; link.textContent = t("download");
    link.addEventListener("click", (e) => { e.preventDefault(); download(b.proof, `proof-${b.first_seq}.json`); });
    const p = document.createElement("td"); p.append(link);
    const anc = cell(b.anchor ? T[lang]["anc_" + b.anchor] || b.anchor : "–", "st-" + (b.anchor || ""));
    if (b.anchor) anc.dataset.state = b.anchor;
    tr.append(cell(b.batch), cell(`${b.first_seq}–${b.last_seq}`, "mono"), anc, p);
    bt.append(tr);
  }
}

const auth = () => ({ Authorization: "Bearer " + token });

async function download(url, name) {
  const r = await fetch(url, { headers: auth() });
  if (!r.ok) return;
  const a = document.createElement("a"); a.href = URL.createObjectURL(await r.blob()); a.download = name; a.click();
}

function setLive(on) { const el = $("live"); el.classList.toggle("off", !on); el.dataset.i18n = on ? "live" : "offline"; el.textContent = t(el.dataset.i18n); }

async function stream() {
  for (;;) {
    if (!token) { $("login").hidden = false; return; }
    try {
      const r = await fetch("/api/v1/events", { headers: auth() });
      if (r.status === 401 || r.status === 503) { token = ""; sessionStorage.removeItem("tiyi-token"); $("login").hidden = false; setLive(false); return; }
      const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
      setLive(true);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i); buf = buf.slice(i + 2);
          if (ev.startsWith("data: ")) render(JSON.parse(ev.slice(6)));
        }
      }
    } catch (e) { /* the gateway restarts or the network drops: try again */ }
    setLive(false);
    await new Promise((ok) => setTimeout(ok, 2000));
  }
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault(); token = $("token").value.trim(); sessionStorage.setItem("tiyi-token", token); $("login").hidden = true; stream();
});
$("pair").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/api/v1/devices", { method: "POST", headers: { ...auth(), "Content-Type": "application/json" },
    body: JSON.stringify({ entry: $("entry").value.trim(), model: $("model").value.trim() || null }) });
  const body = await r.json().catch(() => ({}));
  $("pairmsg").textContent = r.ok ? `${t("paired")}: ${body.id}` : (body.detail || r.status);
  $("pairmsg").dataset.ok = r.ok ? "1" : "0";
  if (r.ok) $("entry").value = "";
});
$("lang").addEventListener("click", () => { lang = lang === "zh" ? "en" : "zh"; localStorage.setItem("tiyi-lang", lang); applyLang(); });
applyLang();
stream();

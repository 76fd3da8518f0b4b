#!/usr/bin/env node
// Opens an HTML report in a real headless Chromium (DevTools protocol over --remote-debugging-pipe,
// no extra packages) and fails when the page logs a console error, throws, requests anything
// but itself (it must be self-contained), has fewer SVGs than expected, an SVG of zero size, or
// a NaN / Infinity in an SVG attribute. Optionally writes a full-page screenshot.
//
//   node scripts/check-report.js report.html [--min-svgs N] [--screenshot out.png] [--parts N] [--width 1200] [--json]
//
// Exit 0: all checks pass; 1: a check failed (each failure printed); 2: usage error or no Chromium.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { pathToFileURL } = require('node:url');

function usage(msg) {
  process.stderr.write(`check-report: ${msg}\nusage: check-report.js FILE.html [--min-svgs N] [--screenshot OUT.png] [--parts N] [--width PX] [--json]\n`);
  process.exit(2);
}

const args = process.argv.slice(2);
const opts = { minSvgs: 1, width: 1200, parts: 1 };
let file;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  const val = () => { if (i + 1 >= args.length) usage(`${a} needs a value`); return args[++i]; };
  if (a === '--min-svgs') opts.minSvgs = Number(val());
  else if (a === '--screenshot') opts.screenshot = val();
  else if (a === '--parts') opts.parts = Number(val());
  else if (a === '--width') opts.width = Number(val());
  else if (a === '--json') opts.json = true;
  else if (a.startsWith('--')) usage(`unknown option ${a}`);
  else if (file) usage('one file at a time');
  else file = a;
}
if (!file) usage('no file given');
if (!fs.existsSync(file)) usage(`${file} does not exist`);
if (!(opts.minSvgs >= 0) || !(opts.width > 0) || !(opts.parts >= 1)) usage('bad numeric option');

function findChromium() {
  const candidates = [process.env.CHROMIUM, 'chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'].filter(Boolean);
  for (const c of candidates) {
    const r = spawnSync('sh', ['-c', `command -v "${c.replace(/"/g, '')}"`], { encoding: 'utf8' });
    if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  }
  return null;
}
const chromium = findChromium();
if (!chromium) usage('no chromium on PATH (apt-get install chromium, or set CHROMIUM)');

const url = pathToFileURL(path.resolve(file)).href;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'check-report-'));
const child = spawn(chromium, [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-extensions', '--hide-scrollbars', '--mute-audio',
  `--user-data-dir=${profile}`, '--remote-debugging-pipe', `--window-size=${opts.width},1000`, 'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
let chromeStderr = '';
child.stderr.on('data', (d) => { chromeStderr = (chromeStderr + d).slice(-4000); });
const toChrome = child.stdio[3], fromChrome = child.stdio[4];

let nextId = 1;
const pending = new Map();
const listeners = [];
let buf = Buffer.alloc(0);
fromChrome.on('data', (d) => {
  buf = Buffer.concat([buf, d]);
  let z;
  while ((z = buf.indexOf(0)) >= 0) {
    const msg = JSON.parse(buf.subarray(0, z).toString('utf8'));
    buf = buf.subarray(z + 1);
    if (msg.id && pending.has(msg.id)) {
      const { resolve, reject, method } = pending.get(msg.id);
      pending.delete(msg.id);
      if (msg.error) reject(new Error(`${method}: ${msg.error.message}`));
      else resolve(msg.result);
    } else if (msg.method) for (const l of listeners) l(msg);
  }
});
function send(method, params = {}, sessionId) {
  const id = nextId++;
  toChrome.write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
  return new Promise((resolve, reject) => pending.set(id, { resolve, reject, method }));
}
function waitFor(pred, ms, what) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    listeners.push((m) => { if (pred(m)) { clearTimeout(t); resolve(m); } });
  });
}

const failures = [];
const requests = [];
const consoleMessages = [];

async function main() {
  const timer = setTimeout(() => { failures.push('timed out after 60 s'); finish(); }, 60_000);
  timer.unref();
  const { targetInfos } = await send('Target.getTargets');
  let page = targetInfos.find((t) => t.type === 'page');
  if (!page) page = { targetId: (await send('Target.createTarget', { url: 'about:blank' })).targetId };
  const { sessionId } = await send('Target.attachToTarget', { targetId: page.targetId, flatten: true });
  listeners.push((m) => {
    if (m.sessionId !== sessionId) return;
    const p = m.params;
    if (m.method === 'Runtime.exceptionThrown') failures.push(`uncaught exception: ${p.exceptionDetails.exception?.description ?? p.exceptionDetails.text}`);
    else if (m.method === 'Runtime.consoleAPICalled') {
      const text = p.args.map((a) => a.value ?? a.description ?? '').join(' ');
      consoleMessages.push(`${p.type}: ${text}`);
      if (p.type === 'error' || p.type === 'assert') failures.push(`console.${p.type}: ${text}`);
    } else if (m.method === 'Log.entryAdded') {
      consoleMessages.push(`${p.entry.level}: ${p.entry.text}`);
      if (p.entry.level === 'error') failures.push(`console error (${p.entry.source}): ${p.entry.text}${p.entry.url ? ` (${p.entry.url})` : ''}`);
    } else if (m.method === 'Network.requestWillBeSent') {
      requests.push(p.request.url);
      if (p.request.url !== url && !p.request.url.startsWith('data:')) failures.push(`not self-contained: the page requested ${p.request.url}`);
    } else if (m.method === 'Network.loadingFailed') failures.push(`a load failed: ${p.errorText}`);
  });
  for (const d of ['Runtime.enable', 'Log.enable', 'Network.enable', 'Page.enable']) await send(d, {}, sessionId);
  const loaded = waitFor((m) => m.sessionId === sessionId && m.method === 'Page.loadEventFired', 30_000, 'the load event');
  const nav = await send('Page.navigate', { url }, sessionId);
  if (nav.errorText) failures.push(`navigation failed: ${nav.errorText}`);
  await loaded;
  await new Promise((r) => setTimeout(r, 300)); // late errors
  const probe = `(() => {
    const svgs = [...document.querySelectorAll('svg')].filter((s) => !s.parentElement.closest('svg'));
    const bad = [];
    for (const el of document.querySelectorAll('svg, svg *'))
      for (const a of el.attributes) if (/NaN|Infinity|undefined/.test(a.value)) bad.push(el.tagName + '[' + a.name + '="' + a.value.slice(0, 60) + '"]');
    const sizes = svgs.map((s) => { const r = s.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height), s.querySelectorAll('rect, path, line, circle').length]; });
    return JSON.stringify({ title: document.title, svgs: svgs.length, sizes, bad: bad.slice(0, 10), badCount: bad.length, scripts: document.scripts.length,
      links: [...document.querySelectorAll('link[href], img[src], iframe, object, embed')].length, height: document.documentElement.scrollHeight,
      text: document.body ? document.body.innerText.length : 0 });
  })()`;
  const r = await send('Runtime.evaluate', { expression: probe, returnByValue: true }, sessionId);
  const info = JSON.parse(r.result.value);
  if (info.svgs < opts.minSvgs) failures.push(`expected at least ${opts.minSvgs} top-level SVGs, found ${info.svgs}`);
  info.sizes.forEach(([w, h, shapes], i) => {
    if (!(w > 0 && h > 0)) failures.push(`SVG #${i + 1} renders at ${w}x${h}`);
    if (shapes === 0) failures.push(`SVG #${i + 1} draws nothing`);
  });
  if (info.badCount) failures.push(`${info.badCount} SVG attributes hold NaN / Infinity / undefined, e.g. ${info.bad.join(', ')}`);
  if (info.links) failures.push(`${info.links} external resources (link / img / iframe / object / embed)`);
  if (!info.text) failures.push('the page shows no text');
  if (opts.screenshot) {
    const height = Math.min(info.height, 16000);
    const partH = Math.ceil(height / opts.parts);
    for (let k = 0; k < opts.parts; k++) {
      const shot = await send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true, clip: { x: 0, y: k * partH, width: opts.width, height: Math.min(partH, height - k * partH), scale: 1 } }, sessionId);
      const out = opts.parts === 1 ? opts.screenshot : opts.screenshot.replace(/(\.png)?$/i, `-${k + 1}.png`);
      fs.writeFileSync(out, Buffer.from(shot.data, 'base64'));
      info.screenshots = [...(info.screenshots ?? []), out];
    }
  }
  clearTimeout(timer);
  report(info);
}

let finished = false;
function report(info) {
  if (finished) return;
  finished = true;
  const ok = failures.length === 0;
  if (opts.json) process.stdout.write(JSON.stringify({ ok, file, failures, svgs: info?.svgs, sizes: info?.sizes, requests, console: consoleMessages, screenshots: info?.screenshots ?? [] }) + '\n');
  else {
    if (info) process.stdout.write(`${file}: "${info.title}", ${info.svgs} SVGs, ${info.scripts} scripts, ${requests.length} request(s), page ${info.height} px high\n`);
    for (const f of failures) process.stdout.write(`FAIL: ${f}\n`);
    if (ok) process.stdout.write('OK: no console errors, self-contained, every SVG renders\n');
    for (const s of info?.screenshots ?? []) process.stdout.write(`screenshot: ${s}\n`);
  }
  cleanup(ok ? 0 : 1);
}
function finish() { report(null); }
function cleanup(code) {
  try { toChrome.write(JSON.stringify({ id: nextId++, method: 'Browser.close', params: {} }) + '\0'); } catch { /* already gone */ }
  const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
  child.once('exit', () => {
    clearTimeout(kill);
    fs.rmSync(profile, { recursive: true, force: true });
    process.exit(code);
  });
}
child.on('error', (e) => { process.stderr.write(`check-report: cannot start ${chromium}: ${e.message}\n`); process.exit(2); });
child.on('exit', (code) => {
  if (!finished) {
    process.stderr.write(`check-report: chromium exited early (${code})\n${chromeStderr}\n`);
    process.exit(2);
  }
});
main().catch((e) => { failures.push(`check error: ${e.message}`); finish(); });

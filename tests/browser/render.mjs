// Opens an mcptap report in headless Chromium, clicks an exchange, takes a screenshot, and
// prints one JSON object describing what the page shows (for tests/report.rs).
//
//   node tests/browser/render.mjs REPORT.html OUT.png [--click=N[,N…]|auto] [--side=a|b]
//        [--filter=TEXT] [--perf] [--top] [--width=1440] [--height=900] [--timeout=MS]
//
// Every request other than the report file itself is aborted and counted: a self-contained
// page makes none.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [file, out, ...rest] = process.argv.slice(2);
if (!file || !out) {
  console.error('usage: node render.mjs REPORT.html OUT.png [--click=N|auto] [--side=a|b] [--filter=TEXT] [--perf]');
  process.exit(2);
}
const opt = Object.fromEntries(
  rest.map((a) => {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    return m ? [m[1], m[2] === undefined ? true : m[2]] : [a, true];
  })
);
const pageUrl = pathToFileURL(resolve(file)).href;
const profile = mkdtempSync(join(tmpdir(), 'mcptap-chromium-'));
const result = { requests: [], blocked: [], console: [], pageErrors: [] };

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
  viewport: { width: Number(opt.width || 1440), height: Number(opt.height || 900) },
  deviceScaleFactor: 1,
  offline: true,
});
let failed = null;
try {
  context.on('request', (r) => {
    if (r.url() !== pageUrl) result.requests.push(r.url());
  });
  await context.route('**/*', (route) => {
    const u = route.request().url();
    if (u === pageUrl) return route.continue();
    result.blocked.push(u);
    return route.abort();
  });
  // Injected by the browser (not by the page), so the page's CSP does not apply to it.
  await context.addInitScript(() => {
    window.__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sample || ''));
    });
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(m.type() + ': ' + m.text());
  });
  page.on('pageerror', (e) => result.pageErrors.push(String(e)));

  const t0 = Date.now();
  await page.goto(pageUrl, { waitUntil: 'load' });
  await page.waitForSelector('body[data-ready="1"]', { state: 'attached', timeout: Number(opt.timeout || 60000) });
  result.wallMs = Date.now() - t0;
  Object.assign(
    result,
    await page.evaluate(() => ({
      readyMs: Number(document.body.getAttribute('data-ready-ms')),
      layoutMs: Number(document.body.getAttribute('data-layout-ms')),
      title: document.title,
      csp: document.querySelector('meta[http-equiv="Content-Security-Policy"]')?.getAttribute('content') || null,
      stages: [...document.querySelectorAll('.stage')].map((s) => ({ id: s.dataset.stage, status: s.dataset.status })),
      silence: [...document.querySelectorAll('.silence[data-silence]')].map((s) => ({ stage: s.dataset.silence, text: s.textContent })),
      silenceMarks: [...document.querySelectorAll('.silence-mark')].map((s) => s.getAttribute('data-silence')),
      bands: [...document.querySelectorAll('[data-stages]')].map((b) => b.getAttribute('data-stages')),
      flows: [...document.querySelectorAll('tr.flow')].map((tr) => ({ flow: Number(tr.dataset.flow), troubled: tr.classList.contains('troubled'), text: tr.textContent })),
      findings: [...document.querySelectorAll('.findings .finding')].map((f) => ({
        check: f.dataset.check,
        link: f.querySelector('a.exlink')?.getAttribute('href') || null,
      })),
      gapsInDom: [...document.querySelectorAll('[data-gap]')].map((g) => g.textContent),
      gaps: (document.getElementById('diagram')?.getAttribute('data-gaps') || '').split('\n').filter(Boolean),
      rowsInDom: document.querySelectorAll('g.row[data-kind]').length,
      count: document.getElementById('count')?.textContent || '',
      diffSummary: document.getElementById('diff-summary')?.textContent || null,
      diffRows: Number(document.getElementById('diagram')?.getAttribute('data-diff-rows') || 0),
      bodyHeight: document.body.scrollHeight,
    }))
  );

  if (opt.perf) {
    // Scroll through the diagram: each step draws only the rows on screen.
    result.scroll = await page.evaluate(async () => {
      const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const steps = [];
      const h = document.body.scrollHeight;
      for (const f of [0.25, 0.5, 0.75, 1]) {
        const t = performance.now();
        window.scrollTo(0, h * f);
        await frame();
        steps.push({ at: f, ms: Math.round(performance.now() - t), rowsInDom: document.querySelectorAll('g.row[data-kind]').length });
      }
      window.scrollTo(0, 0);
      await frame();
      return steps;
    });
  }

  let click = opt.click;
  if (click === 'auto' || click === true) {
    click = await page.evaluate(() => {
      const f = document.querySelector('.findings .finding a.exlink');
      return f ? f.getAttribute('data-ex') : document.querySelector('g.row[data-kind]')?.getAttribute('data-ex');
    });
  }
  // --click=N, or several (--click=1,2,3): each is clicked in turn; `expanded` is the last,
  // `expandedAll` every one.
  const clicks = click ? String(click).split(',').filter(Boolean) : [];
  if (clicks.length) result.expandedAll = [];
  for (const click of clicks) {
    const side = opt.side === 'b' ? 1 : 0;
    const selector = `g.row[data-ex="${Number(click)}"][data-side="${side}"][data-kind="request"]`;
    // Scroll the row on screen, then click it with the mouse where a reader would: on its arrow.
    const box = await page.evaluate(async (sel) => {
      const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      const find = () => document.querySelector(sel);
      if (!find()) {
        window.scrollTo(0, 0);
        await frame();
      }
      // Rows are in time order, so exchange ids grow down the page: bisect the scroll position.
      let row = find();
      const want = Number(sel.match(/data-ex="(\d+)"/)[1]);
      let lo = 0;
      let hi = document.body.scrollHeight;
      for (let i = 0; !row && i < 40 && lo < hi; i++) {
        const mid = Math.floor((lo + hi) / 2);
        window.scrollTo(0, mid);
        await frame();
        row = find();
        if (row) break;
        const ids = [...document.querySelectorAll('g.row[data-kind]')].map((r) => Number(r.getAttribute('data-ex')));
        if (!ids.length || Math.min(...ids) > want) hi = mid;
        else lo = mid + 1;
      }
      if (!row) return null;
      const r = row.querySelector('rect.hit').getBoundingClientRect();
      if (r.top < 120 || r.bottom > window.innerHeight - 20) {
        window.scrollBy(0, r.top - window.innerHeight / 3);
        await frame();
      }
      const hit = find().querySelector('rect.hit').getBoundingClientRect();
      const line = find().querySelector('line.arrow').getBoundingClientRect();
      return { x: line.left + line.width * 0.3, y: hit.top + hit.height / 2 };
    }, selector);
    if (!box) throw new Error('no row for exchange ' + click + ' in the diagram');
    await page.mouse.click(box.x, box.y);
    await page.waitForSelector(`#detail-title[data-ex="${Number(click)}"]`, { timeout: 10000 });
    result.expanded = await page.evaluate(() => {
      const d = document.getElementById('detail');
      return {
        ex: Number(document.getElementById('detail-title').dataset.ex),
        title: document.getElementById('detail-title').textContent,
        hash: location.hash,
        headerRows: d.querySelectorAll('table.kv tr').length,
        requestBody: d.querySelector('[data-body="request"] pre')?.textContent ?? null,
        responseBody: d.querySelector('[data-body="response"] pre')?.textContent ?? null,
        sseEvents: d.querySelectorAll('#sse-events li').length,
        text: d.textContent,
        selectedRows: document.querySelectorAll('g.row.sel').length,
        diffMarksInDom: document.querySelectorAll('[data-diff-row]').length,
      };
    });
    result.expandedAll.push(result.expanded);
  }
  if (opt.filter) {
    await page.fill('#filter', String(opt.filter));
    await page.waitForFunction(() => document.getElementById('count').textContent.includes(' of '), null, { timeout: 10000 });
    result.filtered = await page.evaluate(() => ({
      count: document.getElementById('count').textContent,
      shown: Number(document.getElementById('count').getAttribute('data-shown')),
      rowsInDom: document.querySelectorAll('g.row[data-kind]').length,
    }));
  }

  result.pwned = await page.evaluate(() => (window.__pwned === undefined ? null : String(window.__pwned)));
  result.csp = result.csp || null;
  result.cspViolations = await page.evaluate(() => window.__csp || []);
  if (opt.top) {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  }
  await page.screenshot({ path: out, fullPage: false });
} catch (e) {
  failed = e;
  result.error = String(e && e.message ? e.message : e).slice(0, 600);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
if (failed) process.exit(1);

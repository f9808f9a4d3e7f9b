'use strict';
// mcptap report page. Every string from the capture goes into the DOM through textContent
// or a data attribute, never through innerHTML: the capture is attacker-controlled.
(function () {
  const DATA = JSON.parse(document.getElementById('mcptap-data').textContent);
  const DIFF = DATA.mode === 'diff';
  const SESSIONS = DATA.sessions;

  const ROW = 22; // px between two arrows
  const GAP_US = 1e6; // a pause at least this long becomes a labelled band
  const GAP_H = 34; // the band's height
  const HEAD = 44; // lane heads
  const BUF = 500; // px drawn above and below the viewport
  const FINDINGS_SHOWN = 100;
  const AUTH = new Set(['resource_metadata', 'auth_server_metadata', 'registration', 'authorize', 'token']);
  const MCP = new Set(['mcp', 'legacy_sse', 'legacy_messages']);
  const SVGNS = 'http://www.w3.org/2000/svg';

  // ---------- small DOM helpers ----------
  function el(tag, props, kids) {
    const n = document.createElement(tag);
    if (props) {
      for (const k in props) {
        const v = props[k];
        if (v === undefined || v === null) continue;
        if (k === 'class') n.className = v;
        else if (k === 'text') n.textContent = String(v);
        else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
        else n.setAttribute(k, String(v));
      }
    }
    if (kids) for (const c of kids) if (c !== null && c !== undefined) n.append(c);
    return n;
  }
  function sv(tag, attrs, text) {
    const n = document.createElementNS(SVGNS, tag);
    for (const k in attrs) if (attrs[k] !== undefined && attrs[k] !== null) n.setAttribute(k, String(attrs[k]));
    if (text !== undefined) n.textContent = String(text);
    return n;
  }
  const txt = (s) => document.createTextNode(String(s));

  // ---------- formatting ----------
  function dur(us) {
    if (us === null || us === undefined) return '—';
    if (us < 1000) return us + ' µs';
    if (us < 1e6) return (us / 1000).toFixed(1) + ' ms';
    if (us < 60e6) return (us / 1e6).toFixed(1) + ' s';
    const m = Math.floor(us / 60e6);
    return m + ' min ' + Math.round((us - m * 60e6) / 1e6) + ' s';
  }
  const off = (us) => '+' + (us / 1e6).toFixed(3) + ' s';
  function bytes(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1) + ' MiB';
    if (n >= 1024) return (n / 1024).toFixed(1) + ' KiB';
    return n + ' B';
  }
  function clip(s, n) {
    s = String(s);
    return s.length > n ? s.slice(0, n - 1) + '…' : s;
  }
  function wall(s, t) {
    const d = new Date(s.startMs + t / 1000);
    if (!isFinite(d.getTime())) return off(t);
    return d.toISOString().replace('T', ' ').slice(0, 23) + 'Z';
  }
  const roleClass = (x) => (AUTH.has(x.role) ? 'auth' : MCP.has(x.role) ? 'mcp' : 'other');
  const statusClass = (x) => (x.status ? String(Math.floor(x.status / 100)) : 'none');
  function outcome(x) {
    return x.end ? x.end.outcome : 'in flight (no end recorded)';
  }
  function reqWords(x) {
    return '#' + x.ex + ' ' + x.method + ' ' + x.target + (x.rpc ? ' · ' + x.rpc : '');
  }
  function respWords(x) {
    if (!x.status) return 'no response · ' + outcome(x) + (x.end && x.end.error ? ': ' + x.end.error : '');
    const parts = [String(x.status)];
    if (x.producer === 'proxy') parts.push('made by mcptap');
    if (x.upgrade) parts.push('upgraded to ' + x.upgrade.protocol);
    if (x.stream) parts.push('event stream, ' + x.sse.length + (x.sse.length === 1 ? ' event' : ' events'));
    else if (x.mime) parts.push(x.mime);
    if (x.answer) parts.push(x.answer);
    if (x.end && x.end.outcome !== 'complete') parts.push(x.end.outcome);
    return parts.join(' · ');
  }
  function timingWords(x) {
    if (!x.end) return '';
    const t = x.end.timings;
    const parts = [];
    if (t.upstream_connect_us !== null) parts.push('connect ' + dur(t.upstream_connect_us));
    if (t.ttfb_us !== null) parts.push('ttfb ' + dur(t.ttfb_us));
    parts.push('total ' + dur(t.total_us));
    return parts.join(' · ');
  }

  // ---------- sessions ----------
  SESSIONS.forEach((s, i) => {
    s.side = i;
    s.startMs = Date.parse(s.started);
    s.byEx = new Map();
    for (const x of s.exchanges) {
      // Empty fields are left out of the data to keep big captures small.
      x.sse = x.sse || [];
      x.rpc = x.rpc || '';
      x.answer = x.answer || '';
      if (x.end) x.end.truncated = x.end.truncated || [];
      s.byEx.set(x.ex, x);
    }
    s.conn = new Map();
    for (const c of s.conns) s.conn.set(c.conn, c);
    s.findingsByEx = new Map();
    for (const f of s.findings) {
      if (f.exchange === null || f.exchange === undefined) continue;
      if (!s.findingsByEx.has(f.exchange)) s.findingsByEx.set(f.exchange, []);
      s.findingsByEx.get(f.exchange).push(f);
    }
    s.letter = DIFF ? (i === 0 ? 'a' : 'b') : '';
  });
  function exHash(s, ex) {
    return '#' + (DIFF ? s.letter + '-' : '') + 'ex-' + ex;
  }
  function exLink(s, ex) {
    const x = s.byEx.get(ex);
    const words = x ? '#' + ex + ' ' + x.method + ' ' + x.path : '#' + ex;
    return el('a', { href: exHash(s, ex), class: 'exlink', 'data-ex': ex, text: words });
  }

  // ---------- state ----------
  const state = { terms: [], sel: null, layout: null };

  // ---------- page skeleton ----------
  const app = document.getElementById('app');
  const main = el('div', { id: 'main' });
  const detail = el('aside', { id: 'detail' });
  const layoutEl = el('div', { id: 'layout', class: 'nodetail' }, [main, detail]);
  app.append(layoutEl);

  const header = el('header');
  main.append(header);
  header.append(
    el('h1', { text: DIFF ? 'mcptap report: two sessions side by side' : 'mcptap report · session ' + SESSIONS[0].session_id }),
    el('div', { class: 'meta', text: 'made by ' + DATA.generator + ' · everything below is what the capture holds, nothing more' })
  );
  const sessionsEl = el('div', { class: DIFF ? 'sessions' : '' });
  header.append(sessionsEl);
  for (const s of SESSIONS) sessionsEl.append(summary(s));
  if (DIFF) header.append(diffSummary());

  // Several clients in one capture: a line per flow; a click shows that flow's sequence alone.
  function flowTable(s) {
    const box = el('div', { class: 'flows' });
    box.append(el('h3', { text: 'Client flows' }));
    const why = s.flow_choice ? ' Explained below: flow ' + s.flows.find((f) => f.chosen).number + ', ' + s.flow_choice + '.' : '';
    box.append(el('p', { class: 'meta', text: s.flows.length + ' client flows' + (s.other_traffic ? ' and ' + s.other_traffic + ' exchanges of other traffic' : '') + '.' + why }));
    const table = el('table', { class: 'flowtable' });
    table.append(el('tr', {}, ['flow', 'client', 'era', 'from – to', 'exchanges', 'furthest', 'silent after', 'errors', ''].map((h) => el('th', { text: h }))));
    for (const f of s.flows) {
      // A flow the page does not draw (a large capture's) is one command away.
      const show = f.drawn
        ? el('button', { type: 'button', class: 'flowbtn', 'data-flow': f.number, text: 'show its sequence' })
        : el('span', { class: 'meta', text: 'not drawn: report --flow ' + f.number });
      if (f.drawn) {
        show.addEventListener('click', () => {
          filter.value = 'flow:' + f.number;
          state.terms = ['flow:' + f.number];
          relayout();
        });
      }
      const cells = [String(f.number) + (f.chosen ? ' *' : ''), f.client, f.era_label, dur(f.first_t) + ' – ' + dur(f.last_t), String(f.exchanges), f.furthest_stage || '–', f.silent_after || '–', String(f.errors)];
      const tr = el('tr', { class: 'flow' + (f.silent_after || f.errors ? ' troubled' : ''), 'data-flow': f.number }, cells.map((c) => el('td', { text: c })));
      tr.append(el('td', {}, [show]));
      table.append(tr);
    }
    box.append(table);
    return box;
  }

  function summary(s) {
    const sec = el('section', { class: 'session', 'data-side': s.side });
    if (DIFF) sec.append(el('h2', { text: (s.side === 0 ? 'A' : 'B') + ': ' + s.name }));
    const conns = s.conns.length;
    const meta = el('p', { class: 'meta' }, [
      txt((DIFF ? '' : s.name + ' · ') + 'session ' + s.session_id + ' · started ' + s.started + ' · '),
      txt(s.exchanges_total + ' exchanges on ' + conns + ' connection' + (conns === 1 ? '' : 's') + ' · '),
      txt(s.routes.map((r) => r[0] + ' → ' + r[1]).join(', ') + ' · lasted ' + dur(s.end_t) + ' '),
      s.redaction === 'off'
        ? el('span', { class: 'badge clear', text: 'NOT redacted: this capture holds secrets in clear' })
        : el('span', { class: 'badge redacted', text: 'secrets redacted (' + s.redaction + ')' }),
      txt(' '),
      el('span', { class: 'badge era era-' + s.era, 'data-era': s.era, text: 'MCP ' + s.era_label }),
    ]);
    sec.append(meta);
    if (s.folded) sec.append(el('p', { class: 'meta folded', text: 'A large capture: ' + s.folded }));

    if (s.flows && s.flows.length) sec.append(flowTable(s));

    sec.append(el('h3', { text: s.flows && s.flows.length ? 'Stages of flow ' + s.flows.find((f) => f.chosen).number : 'Stages' }));
    const ul = el('ul', { class: 'stages' });
    for (const st of s.stages) {
      const mark = { reached: '✓', missing: '✗', not_observed: '·', not_applicable: '–' }[st.status] || '·';
      const li = el('li', { class: 'stage ' + st.status, 'data-stage': st.id, 'data-status': st.status, title: st.title }, [
        el('span', { class: 'mark', text: mark }),
        txt(st.id),
      ]);
      if (st.status === 'reached') {
        li.append(txt(' ' + off(st.t) + ' '));
        if (st.first_exchange !== null) li.append(exLink(s, st.first_exchange));
      } else if (st.status === 'not_observed') {
        li.append(txt(' (not seen here)'));
      } else if (st.status === 'not_applicable') {
        li.append(txt(st.id === 'call' ? ' (a probe calls no tools)' : st.id === 'listen' ? ' (optional: no subscriptions/listen)' : ' (no authorization)'));
      }
      ul.append(li);
    }
    sec.append(ul);

    sec.append(el('h3', { text: 'Silence' }));
    sec.append(silenceBox(s));

    if (s.tokens.length) {
      sec.append(el('h3', { text: 'Tokens' }));
      const tl = el('ul', { class: 'tokens' });
      for (const t of s.tokens) {
        const fate =
          t.accepted === null
            ? 'never presented'
            : t.accepted
              ? 'presented ' + t.presented.length + ' times, accepted'
              : 'presented ' + t.presented.length + ' times, rejected every time';
        tl.append(
          el('li', { class: 'token' }, [
            txt('fp=' + t.fp + ' (' + t.grant_type + ') issued by '),
            exLink(s, t.issued_by),
            txt(' at ' + off(t.issued_t) + ' — ' + fate),
          ])
        );
      }
      sec.append(tl);
    }

    const count = (sev) => s.findings.filter((f) => f.severity === sev).length;
    sec.append(
      el('h3', {
        text: 'Findings (' + count('error') + ' errors, ' + count('warning') + ' warnings, ' + count('info') + ' notes)',
      })
    );
    const fl = el('ul', { class: 'findings', 'data-side': s.side });
    sec.append(fl);
    if (!s.findings.length) fl.append(el('li', { class: 'note', text: 'none: every check held.' }));
    const addFindings = (from, to) => {
      for (const f of s.findings.slice(from, to)) fl.append(findingItem(s, f));
    };
    addFindings(0, FINDINGS_SHOWN);
    if (s.findings.length > FINDINGS_SHOWN) {
      const more = el('button', {
        class: 'more',
        text: 'show all ' + s.findings.length + ' findings',
        onclick: () => {
          more.remove();
          addFindings(FINDINGS_SHOWN, s.findings.length);
        },
      });
      sec.append(more);
    }

    const warnings = s.warnings.concat(s.notes.map((n) => off(n.t) + ' ' + n.code + ': ' + n.message));
    for (const e of s.tls_errors) warnings.push(off(e.t) + ' TLS handshake from ' + e.peer + (e.sni ? ' for ' + e.sni : '') + ' failed: ' + e.reason);
    if (s.clean === false) warnings.push('the proxy did not shut down cleanly (see session_end)');
    if (warnings.length) {
      sec.append(el('h3', { text: 'Reading the capture' }));
      const wl = el('ul', { class: 'warnings' });
      for (const w of warnings) wl.append(el('li', { text: w }));
      sec.append(wl);
    }
    return sec;
  }

  function findingItem(s, f) {
    const li = el('li', { class: 'finding sev-' + f.severity, 'data-check': f.check }, [
      el('span', { class: 'sev', text: f.severity }),
      el('span', { class: 'check', text: f.check }),
      el('span', { class: 'spec', text: f.spec }),
    ]);
    if (f.exchange !== null && f.exchange !== undefined) li.append(txt(' '), exLink(s, f.exchange));
    li.append(el('div', { text: f.message }));
    if (f.evidence.length) {
      const ev = el('ul');
      for (const e of f.evidence) ev.append(el('li', { text: e }));
      li.append(ev);
    }
    return li;
  }

  function silenceBox(s) {
    const sil = s.silence;
    const reachedCall = s.stages.some((st) => st.id === 'call' && st.status === 'reached');
    if (!sil) {
      return el('div', {
        class: 'silence none',
        id: DIFF ? 'silence-' + s.letter : 'silence',
        'data-silence': 'none',
        text: reachedCall ? 'None: the session reached tools/call.' : 'Nothing reached the proxy.',
      });
    }
    const box = el('div', { class: 'silence', id: DIFF ? 'silence-' + s.letter : 'silence', 'data-silence': sil.after_stage }, [
      el('strong', { text: 'Went quiet after ' + sil.after_stage }),
      txt(' (' + off(sil.at_t) + (sil.at_exchange !== null ? ', ' : '')),
    ]);
    if (sil.at_exchange !== null) box.append(exLink(s, sil.at_exchange));
    const after = sil.other_requests.length
      ? 'only ' + sil.other_requests.length + ' other request(s) followed, none of them the next step'
      : 'nothing more reached the proxy';
    box.append(
      txt('): ' + after + ' in the ' + sil.quiet_for_s.toFixed(1) + ' s the capture went on.'),
      el('div', { text: 'Expected next: ' + sil.expected_next + '.' })
    );
    return box;
  }

  function diffSummary() {
    const rows = DATA.diff;
    const differ = rows.filter((r) => r.differs.length);
    const p = el('p', { class: 'silence' + (differ.length ? '' : ' none'), id: 'diff-summary' });
    if (!differ.length) {
      p.append(txt('The two sessions compare equal, noise (dates, ids, tokens, ports) aside: ' + rows.length + ' exchanges aligned.'));
      return p;
    }
    const first = differ[0];
    p.append(
      el('strong', { text: differ.length + ' of ' + rows.length + ' rows differ' }),
      txt(' (aligned as mcptap diff aligns them, noise suppressed). First: ' + (DATA.diff_first || first.differs.join(', ')) + ' — ')
    );
    if (first.a !== null) p.append(txt('A '), exLink(SESSIONS[0], first.a), txt(' '));
    else p.append(txt('A has no exchange '));
    p.append(txt('vs '));
    if (first.b !== null) p.append(txt('B '), exLink(SESSIONS[1], first.b));
    else p.append(txt('B has no exchange'));
    return p;
  }

  // ---------- toolbar ----------
  const filter = el('input', {
    id: 'filter',
    type: 'search',
    placeholder: 'Filter: method, path, status, JSON-RPC method, header, #id, flow:N',
    'aria-label': 'filter exchanges',
    autocomplete: 'off',
  });
  const countEl = el('span', { id: 'count' });
  const legend = el('span', { class: 'legend' }, [
    el('span', {}, [el('i', { class: 'lg-auth' }), txt('OAuth')]),
    el('span', {}, [el('i', { class: 'lg-mcp' }), txt('MCP')]),
    el('span', {}, [el('i', { class: 'lg-other' }), txt('other')]),
    txt('SSE events are ticks on their stream; long pauses are folded.'),
  ]);
  main.append(el('div', { id: 'toolbar' }, [filter, countEl, legend]));
  let filterTimer = 0;
  filter.addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      state.terms = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      relayout();
    }, 120);
  });

  function searchText(x) {
    if (x._q === undefined) {
      const parts = ['#' + x.ex, x.method, x.target, x.status || 'none', x.rpc || '', x.answer || '', x.role, outcome(x), x.mime || ''];
      for (const h of x.req_headers) parts.push(h[0] + ': ' + h[1]);
      if (x.resp_headers) for (const h of x.resp_headers) parts.push(h[0] + ': ' + h[1]);
      x._q = parts.join('\n').toLowerCase();
    }
    return x._q;
  }
  function matches(x) {
    if (!x) return false;
    for (const term of state.terms) {
      if (/^#\d+$/.test(term)) {
        if ('#' + x.ex !== term) return false;
      } else if (/^flow:(\d+|other)$/.test(term)) {
        const n = term.slice(5);
        if (n === 'other' ? x.flow !== undefined : String(x.flow) !== n) return false;
      } else if (!searchText(x).includes(term)) return false;
    }
    return true;
  }

  // ---------- diagram ----------
  const diagram = el('div', { id: 'diagram' });
  main.append(diagram);
  const svg = sv('svg', { role: 'img', 'aria-label': 'sequence diagram' });
  diagram.append(svg);

  const MID = DIFF ? 84 : 0; // the strip between two sessions that says what differs

  function lanes(width, col, ncols) {
    const colW = (width - MID) / ncols;
    const x0 = col * (colW + MID);
    const gutter = DIFF ? 64 : 78;
    const stageW = DIFF ? 96 : 128;
    const client = x0 + gutter + stageW + 26;
    const upstream = x0 + colW - (DIFF ? 36 : 60);
    return { x0, x1: x0 + colW, gutter: x0 + gutter, stage: x0 + gutter + 4, stageW, client, mcptap: (client + upstream) / 2, upstream };
  }

  // A folded pause; with a filter on, other exchanges may have happened in it.
  function gapWords(dt) {
    return state.terms.length ? '… ' + dur(dt) + ' between shown exchanges …' : '… ' + dur(dt) + ' quiet …';
  }

  // Maps a time to a y by the rows around it (rows are anchors; gaps are folded between them).
  function makeYAt(ts, ys) {
    const n = ts.length;
    return function (t) {
      if (!n) return HEAD + ROW;
      let lo = 0;
      let hi = n - 1;
      if (t < ts[0]) return ys[0];
      if (t >= ts[n - 1]) {
        const extra = Math.min(GAP_H, Math.log10(1 + (t - ts[n - 1]) / 1000) * 10);
        return ys[n - 1] + extra;
      }
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (ts[mid] <= t) lo = mid;
        else hi = mid - 1;
      }
      const t0 = ts[lo];
      const t1 = ts[lo + 1];
      if (t1 === t0) return ys[lo];
      return ys[lo] + ((ys[lo + 1] - ys[lo]) * (t - t0)) / (t1 - t0);
    };
  }

  function newCol(s, col, ncols, width) {
    return { s, lanes: lanes(width, col, ncols), yOf: new Map(), streams: [], bands: [], silence: null, yAt: null, end: 0 };
  }

  // Single session: rows in time order, each pause folded into a labelled band.
  function layoutTime(width) {
    const s = SESSIONS[0];
    const col = newCol(s, 0, 1, width);
    const shown = s.exchanges.filter(matches);
    const evs = [];
    for (const x of shown) {
      evs.push({ t: x.t, k: 0, x });
      let rt = x.resp_t !== undefined ? x.resp_t : x.end ? x.end.t : x.t;
      evs.push({ t: Math.max(rt, x.t), k: 1, x });
    }
    evs.sort((a, b) => a.t - b.t || a.x.ex - b.x.ex || a.k - b.k);
    const rows = [];
    const gaps = [];
    const ts = [];
    const ys = [];
    let y = HEAD + ROW;
    let prev = null;
    evs.forEach((e) => {
      if (prev !== null) {
        const dt = e.t - prev;
        if (dt >= GAP_US) {
          gaps.push({ y0: y + ROW / 2, y1: y + ROW / 2 + GAP_H, labels: [{ col: 0, text: gapWords(dt) }] });
          y += GAP_H + ROW;
        } else {
          y += ROW + Math.min(26, Math.log10(1 + dt / 1000) * 11);
        }
      }
      prev = e.t;
      ts.push(e.t);
      ys.push(y);
      rows.push({ y, col: 0, k: e.k, x: e.x });
      const pair = col.yOf.get(e.x.ex) || [y, y];
      pair[e.k] = y;
      col.yOf.set(e.x.ex, pair);
    });
    // A long quiet end (the client went silent) is folded and labelled too.
    if (prev !== null && s.end_t - prev >= GAP_US) {
      const words = gapWords(s.end_t - prev).replace(/ …$/, ' until the capture ended …');
      gaps.push({ y0: y + ROW * 2.2, y1: y + ROW * 2.2 + GAP_H, labels: [{ col: 0, text: words }] });
      y += ROW * 2.2 + GAP_H + ROW / 2;
      ts.push(s.end_t);
      ys.push(y);
    }
    col.yAt = makeYAt(ts, ys);
    let height = y + 2 * ROW;
    height = Math.max(height, col.yAt(s.end_t) + ROW);
    // Event streams: a bar from the response to the end, one tick per SSE block.
    for (const x of shown) {
      if (!x.stream && !x.sse.length) continue;
      const pair = col.yOf.get(x.ex);
      const y0 = pair[1];
      const endT = x.end ? x.end.t : s.end_t;
      const y1 = Math.max(y0 + 6, col.yAt(endT));
      const ticks = x.sse.map((e) => ({ y: Math.max(y0, Math.min(y1, col.yAt(e.t))), e }));
      col.streams.push({ x, y0, y1, ticks });
      height = Math.max(height, y1 + ROW);
    }
    finishCol(col, (x) => col.yAt(x.t));
    if (col.silence) height = Math.max(height, col.silence.y + 3 * ROW);
    col.end = height;
    return { cols: [col], rows, gaps, marks: [], height };
  }

  // Two sessions: one row block per aligned pair of exchanges.
  function layoutIndex(width) {
    const cols = SESSIONS.map((s, i) => newCol(s, i, 2, width));
    const rows = [];
    const gaps = [];
    const marks = [];
    const prevT = [null, null];
    let y = HEAD + ROW;
    DATA.diff.forEach((r, i) => {
      const xs = [SESSIONS[0].byEx.get(r.a), SESSIONS[1].byEx.get(r.b)];
      if (!matches(xs[0]) && !matches(xs[1])) return;
      const labels = [];
      xs.forEach((x, c) => {
        if (!x) return;
        if (prevT[c] !== null && x.t - prevT[c] >= GAP_US) labels.push({ col: c, text: gapWords(x.t - prevT[c]) });
        prevT[c] = x.t;
      });
      if (labels.length) {
        gaps.push({ y0: y - ROW / 2, y1: y - ROW / 2 + GAP_H, labels });
        y += GAP_H;
      }
      const hasStream = xs.some((x) => x && x.sse.length);
      const block = 2 * ROW + (hasStream ? ROW : 0) + 6;
      if (r.differs.length) marks.push({ y0: y - ROW / 2 - 2, y1: y - ROW / 2 + block - 4, lines: r.differs.map((d) => '≠ ' + d), row: i });
      xs.forEach((x, c) => {
        if (!x) return;
        const col = cols[c];
        col.yOf.set(x.ex, [y, y + ROW]);
        rows.push({ y, col: c, k: 0, x });
        rows.push({ y: y + ROW, col: c, k: 1, x });
        if (x.stream || x.sse.length) {
          const y0 = y + ROW;
          const y1 = y0 + (hasStream ? ROW + 2 : 6);
          const rt = x.resp_t !== undefined ? x.resp_t : x.t;
          const et = x.end ? x.end.t : col.s.end_t;
          const span = Math.max(1, et - rt);
          const ticks = x.sse.map((e) => ({ y: y0 + ((y1 - y0) * Math.max(0, Math.min(span, e.t - rt))) / span, e }));
          col.streams.push({ x, y0, y1, ticks });
        }
      });
      y += block;
    });
    rows.sort((a, b) => a.y - b.y);
    let height = y + ROW;
    for (const col of cols) {
      finishCol(col, null);
      if (col.silence) height = Math.max(height, col.silence.y + 3 * ROW);
    }
    for (const col of cols) col.end = height;
    return { cols, rows, gaps, marks, height };
  }

  // Stage bands and the silence line of one column.
  function finishCol(col, yOfHidden) {
    const s = col.s;
    const yStart = (ex) => {
      const p = col.yOf.get(ex);
      if (p) return p[0];
      const x = s.byEx.get(ex);
      return x && yOfHidden ? yOfHidden(x) : null;
    };
    const starts = new Map();
    for (const st of s.stages) {
      if (st.status !== 'reached' || st.first_exchange === null) continue;
      const y = yStart(st.first_exchange);
      if (y === null) continue;
      const key = st.first_exchange;
      if (!starts.has(key)) starts.set(key, { y, ids: [] });
      starts.get(key).ids.push(st.id);
    }
    const list = Array.from(starts.values()).sort((a, b) => a.y - b.y);
    list.forEach((b, i) => {
      col.bands.push({ y0: b.y - ROW / 2, y1: i + 1 < list.length ? list[i + 1].y - ROW / 2 : null, ids: b.ids, i });
    });
    const sil = s.silence;
    if (sil) {
      let y = null;
      const p = sil.at_exchange !== null ? col.yOf.get(sil.at_exchange) : null;
      if (p) y = p[1] + ROW * 0.7;
      if (col.yAt) y = Math.max(y === null ? 0 : y, col.yAt(sil.at_t) + ROW * 0.7);
      if (y !== null) col.silence = { y, sil };
    }
  }

  const layoutWidth = () => Math.max(DIFF ? 880 : 640, diagram.clientWidth || 760);
  // Lays out again only when the width changed (the detail panel opened or closed).
  function ensureLayout() {
    if (!state.layout || state.layout.width !== layoutWidth()) relayout();
    else draw();
  }

  function relayout() {
    const width = layoutWidth();
    const t = performance.now();
    state.layout = DIFF ? layoutIndex(width) : layoutTime(width);
    state.layout.width = width;
    state.layoutMs = performance.now() - t;
    for (const col of state.layout.cols) for (const b of col.bands) if (b.y1 === null) b.y1 = state.layout.height;
    diagram.style.height = state.layout.height + 'px';
    const total = SESSIONS.reduce((n, s) => n + s.exchanges.length, 0);
    const shown = state.layout.cols.reduce((n, c) => n + c.yOf.size, 0);
    const noun = total === 1 ? ' exchange' : ' exchanges';
    countEl.textContent = state.terms.length ? shown + ' of ' + total + noun : total + noun;
    countEl.setAttribute('data-shown', shown);
    diagram.setAttribute('data-diff-rows', state.layout.marks.length);
    diagram.setAttribute('data-gaps', state.layout.gaps.map((g) => g.labels.map((l) => l.text).join(' | ')).join('\n'));
    draw();
  }

  // First index whose y is at least y (arrays sorted by y).
  function lowerBound(arr, y, key) {
    let lo = 0;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (key(arr[mid]) < y) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  function arrowHead(x, y, dir, cls) {
    const d = dir > 0 ? 'M' + x + ' ' + y + ' l -8 -4 l 0 8 z' : 'M' + x + ' ' + y + ' l 8 -4 l 0 8 z';
    return sv('path', { d, class: cls });
  }

  function draw() {
    const L = state.layout;
    if (!L) return;
    const rect = diagram.getBoundingClientRect();
    const view = -rect.top; // the viewport's top, in diagram coordinates
    const top = Math.max(0, view - BUF);
    const bottom = Math.min(L.height, -rect.top + window.innerHeight + BUF);
    svg.setAttribute('width', L.width);
    svg.setAttribute('height', Math.max(0, bottom - top));
    svg.style.top = top + 'px';
    const g = sv('g', { transform: 'translate(0,' + -top + ')' });
    const kids = [];

    // Diff marks and gap bands sit behind everything.
    for (let i = lowerBound(L.marks, top - 200, (m) => m.y1); i < L.marks.length && L.marks[i].y0 <= bottom; i++) {
      const m = L.marks[i];
      kids.push(sv('rect', { class: 'diffmark', x: 0, y: m.y0, width: L.width, height: m.y1 - m.y0, 'data-diff-row': m.row }));
      const mid = L.cols[0].lanes.x1 + MID / 2;
      m.lines.forEach((line, k) => kids.push(sv('text', { class: 'diffnote', x: mid, y: m.y0 + 16 + k * 13, 'text-anchor': 'middle' }, line)));
    }
    for (const col of L.cols) {
      const ln = col.lanes;
      for (const b of col.bands) {
        if (b.y1 < top || b.y0 > bottom) continue;
        const gb = sv('g', { class: 'band b' + (b.i % 2), 'data-stages': b.ids.join(' ') });
        gb.append(sv('rect', { x: ln.stage, y: b.y0, width: ln.stageW, height: Math.max(2, b.y1 - b.y0) }));
        gb.append(sv('rect', { x: ln.client - 10, y: b.y0, width: ln.upstream - ln.client + 20, height: Math.max(2, b.y1 - b.y0), opacity: 0.25 }));
        b.ids.forEach((id, k) => {
          // Stays on screen while a long band scrolls by.
          const ty = Math.max(b.y0 + 13 + k * 13, Math.min(view + 90 + k * 13, b.y1 - 6 - (b.ids.length - 1 - k) * 13));
          gb.append(sv('text', { x: ln.stage + 5, y: ty }, clip(id, DIFF ? 15 : 21)));
        });
        kids.push(gb);
      }
      if (col.silence && col.silence.y <= bottom) {
        const y = col.silence.y;
        kids.push(sv('rect', { class: 'after-silence', x: ln.x0, y, width: ln.x1 - ln.x0, height: Math.max(0, col.end - y) }));
      }
    }
    for (let i = lowerBound(L.gaps, top, (g) => g.y1); i < L.gaps.length && L.gaps[i].y0 <= bottom; i++) {
      const gp = L.gaps[i];
      const gg = sv('g', { class: 'gap' });
      gg.append(sv('rect', { x: 0, y: gp.y0, width: L.width, height: gp.y1 - gp.y0 }));
      gg.append(sv('line', { x1: 0, x2: L.width, y1: gp.y0 + 3, y2: gp.y0 + 3 }));
      gg.append(sv('line', { x1: 0, x2: L.width, y1: gp.y1 - 3, y2: gp.y1 - 3 }));
      for (const lb of gp.labels) {
        const ln = L.cols[lb.col].lanes;
        gg.append(sv('text', { x: ln.client + 12, y: (gp.y0 + gp.y1) / 2 + 4, 'data-gap': '1' }, lb.text));
      }
      kids.push(gg);
    }

    // Lanes.
    for (const col of L.cols) {
      const ln = col.lanes;
      for (const [x, name, sub] of [
        [ln.client, 'client', ''],
        [ln.mcptap, 'mcptap', col.s.routes.length ? col.s.routes[0][0] : ''],
        [ln.upstream, 'upstream', col.s.routes.length ? col.s.routes[0][1] : ''],
      ]) {
        kids.push(sv('line', { class: 'lane', x1: x, x2: x, y1: Math.max(HEAD - 6, top), y2: Math.min(col.end, bottom) }));
        if (top < HEAD) {
          kids.push(sv('text', { class: 'lanehead', x, y: 16, 'text-anchor': 'middle' }, name));
          if (sub) kids.push(sv('text', { class: 'lanehead-sub', x, y: 30, 'text-anchor': 'middle' }, clip(sub, Math.floor((ln.mcptap - ln.client) / 6.5))));
        }
      }
      if (top < HEAD && DIFF) kids.push(sv('text', { class: 'lanehead', x: ln.x0 + 6, y: 16 }, col.s.side === 0 ? 'A' : 'B'));
    }

    // Streams and their SSE ticks.
    for (const col of L.cols) {
      const ln = col.lanes;
      for (const st of col.streams) {
        if (st.y1 < top || st.y0 > bottom) continue;
        const x = ln.client + 4;
        const gs = sv('g', { class: 'row', 'data-ex': st.x.ex, 'data-side': col.s.side });
        gs.append(sv('rect', { class: 'stream', x, y: st.y0, width: 7, height: st.y1 - st.y0 }));
        const from = lowerBound(st.ticks, top, (k) => k.y);
        for (let k = from; k < st.ticks.length && st.ticks[k].y <= bottom; k++) {
          const tk = st.ticks[k];
          const cls = tk.e.dispatched ? 'tick' : tk.e.data === undefined ? 'tick comment' : 'tick partial';
          gs.append(sv('line', { class: cls, x1: x - 3, x2: x + 10, y1: tk.y, y2: tk.y, 'data-sse': tk.e.seq }));
        }
        kids.push(gs);
      }
    }

    // Rows.
    const sel = state.sel;
    for (let i = lowerBound(L.rows, top - ROW, (r) => r.y); i < L.rows.length && L.rows[i].y <= bottom + ROW; i++) {
      const r = L.rows[i];
      const col = L.cols[r.col];
      const ln = col.lanes;
      const x = r.x;
      const selected = sel && sel.side === col.s.side && sel.ex === x.ex;
      const gr = sv('g', { class: 'row' + (selected ? ' sel' : ''), 'data-ex': x.ex, 'data-side': col.s.side, 'data-kind': r.k ? 'response' : 'request' });
      gr.append(sv('rect', { class: 'hit', x: ln.x0, y: r.y - ROW / 2, width: ln.x1 - ln.x0, height: ROW }));
      if (r.k === 0) {
        const rc = roleClass(x);
        const end = x.upstream ? ln.upstream : ln.mcptap;
        gr.append(sv('text', { class: 'tlabel', x: ln.gutter - 6, y: r.y + 4, 'text-anchor': 'end' }, off(x.t)));
        gr.append(sv('line', { class: 'arrow role-' + rc, x1: ln.client, x2: end - 2, y1: r.y, y2: r.y }));
        gr.append(arrowHead(end, r.y, 1, 'fill-' + rc));
        gr.append(sv('circle', { cx: ln.mcptap, cy: r.y, r: 2.5, class: 'fill-' + rc }));
        gr.append(sv('text', { class: 'lbl', x: ln.client + 14, y: r.y - 4 }, clip(reqWords(x), Math.floor((ln.upstream - ln.client - 20) / 6.6))));
        const nf = col.s.findingsByEx.get(x.ex);
        if (nf) gr.append(sv('text', { class: 'flag', x: ln.upstream + 6, y: r.y + 4, 'data-findings': nf.length }, '⚑' + nf.length));
      } else {
        const sc = statusClass(x);
        const from = x.producer === 'proxy' || !x.status ? ln.mcptap : ln.upstream;
        const to = x.status ? ln.client : ln.client + (ln.mcptap - ln.client) / 2;
        gr.append(sv('line', { class: 'arrow st-' + sc, x1: from, x2: to + 2, y1: r.y, y2: r.y }));
        if (x.status) gr.append(arrowHead(to, r.y, -1, 'fill-' + sc));
        else gr.append(sv('text', { class: 'flag', x: to - 12, y: r.y + 4 }, '✗'));
        const words = respWords(x);
        gr.append(sv('text', { class: 'lbl sub', x: ln.client + 14, y: r.y - 4 }, clip(words, Math.floor((ln.mcptap - ln.client - 20) / 6.4))));
        const tw = timingWords(x);
        if (tw && !DIFF) gr.append(sv('text', { class: 'lbl sub', x: ln.mcptap + 10, y: r.y - 4 }, clip(tw, Math.floor((ln.upstream - ln.mcptap - 14) / 6.4))));
      }
      kids.push(gr);
    }

    for (const col of L.cols) {
      if (!col.silence || col.silence.y < top || col.silence.y > bottom) continue;
      const ln = col.lanes;
      const y = col.silence.y;
      const gs = sv('g', { class: 'silence-mark', 'data-silence': col.silence.sil.after_stage });
      gs.append(sv('line', { class: 'silence-line', x1: ln.x0 + 4, x2: ln.x1 - 4, y1: y, y2: y }));
      const chars = Math.floor((ln.x1 - ln.client - 16) / 6.6);
      gs.append(sv('text', { class: 'silence-text', x: ln.client + 12, y: y + 16 }, clip('client went quiet after ' + col.silence.sil.after_stage + ' (' + col.silence.sil.quiet_for_s.toFixed(1) + ' s until the capture ended)', chars)));
      gs.append(sv('text', { class: 'silence-text', x: ln.client + 12, y: y + 31 }, clip('expected next: ' + col.silence.sil.expected_next, chars)));
      kids.push(gs);
    }

    g.append(...kids);
    svg.replaceChildren(g);
  }

  let frame = 0;
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(() => {
      frame = 0;
      draw();
    });
  };
  window.addEventListener('scroll', schedule, { passive: true });
  let resizeTimer = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(relayout, 100);
  });
  svg.addEventListener('click', (ev) => {
    const row = ev.target.closest('[data-ex]');
    if (!row) return;
    const s = SESSIONS[Number(row.getAttribute('data-side')) || 0];
    setHash(exHash(s, Number(row.getAttribute('data-ex'))));
  });
  app.addEventListener('click', (ev) => {
    const a = ev.target.closest('a.exlink');
    if (!a) return;
    ev.preventDefault();
    setHash(a.getAttribute('href'));
  });

  // ---------- selection and the detail panel ----------
  function setHash(h) {
    if (location.hash === h) fromHash(true);
    else location.hash = h;
  }
  function fromHash(scroll) {
    const m = /^#(?:([ab])-)?ex-(\d+)$/.exec(location.hash);
    if (!m) {
      select(null, false);
      return;
    }
    const s = m[1] === 'b' ? SESSIONS[1] : SESSIONS[0];
    if (!s) return;
    select({ side: s.side, ex: Number(m[2]) }, scroll);
  }
  window.addEventListener('hashchange', () => fromHash(true));

  function select(sel, scroll) {
    state.sel = sel;
    const s = sel ? SESSIONS[sel.side] : null;
    const x = s ? s.byEx.get(sel.ex) : null;
    detail.replaceChildren();
    if (!x) {
      layoutEl.className = 'nodetail';
      ensureLayout();
      return;
    }
    layoutEl.className = '';
    renderDetail(s, x);
    ensureLayout();
    if (scroll) {
      const col = state.layout.cols.find((c) => c.s === s);
      const p = col && col.yOf.get(x.ex);
      if (p) {
        const top = diagram.getBoundingClientRect().top + window.scrollY;
        window.scrollTo(0, Math.max(0, top + p[0] - window.innerHeight / 3));
      }
    }
    detail.scrollTop = 0;
  }

  function kvTable(pairs) {
    const t = el('table', { class: 'kv' });
    for (const [k, v] of pairs) t.append(el('tr', {}, [el('td', { text: k }), el('td', { text: v })]));
    return t;
  }

  function pretty(text, mime) {
    const trimmed = text.trimStart();
    const looksJson = (mime && /json/.test(mime)) || trimmed.startsWith('{') || trimmed.startsWith('[');
    if (looksJson && text.length < 8e6) {
      try {
        return JSON.stringify(JSON.parse(text), null, 2);
      } catch (e) {
        return text;
      }
    }
    return text;
  }

  function bodyBlock(body, mime, what) {
    const box = el('div', { class: 'bodyblock', 'data-body': what });
    if (!body) {
      box.append(el('p', { class: 'note', text: 'no body' }));
      return box;
    }
    const notes = [];
    if (body.truncated) notes.push('recorded only up to --max-body: ' + bytes(body.recorded) + ' of ' + bytes(body.len));
    else notes.push(bytes(body.len) + ' on the wire');
    if (body.cut) notes.push('shown up to --body-limit');
    if (body.b64 !== undefined) {
      notes.push('not UTF-8: shown in base64');
      box.append(el('p', { class: 'note', text: notes.join(' · ') }), el('pre', { class: 'body', text: body.b64 }));
      return box;
    }
    const text = body.text || '';
    box.append(el('p', { class: 'note', text: notes.join(' · ') }));
    if (mime === 'application/x-www-form-urlencoded') {
      const pairs = [];
      try {
        for (const [k, v] of new URLSearchParams(text)) pairs.push([k, v]);
      } catch (e) {
        /* shown raw below */
      }
      if (pairs.length) box.append(kvTable(pairs));
    }
    box.append(el('pre', { class: 'body', text: pretty(text, mime) }));
    return box;
  }

  function contentType(x, name) {
    const list = name === 'request' ? x.req_headers : x.resp_headers || [];
    for (const h of list) if (h[0] === 'content-type') return h[1].split(';')[0].trim().toLowerCase();
    return null;
  }

  function renderDetail(s, x) {
    const close = el('button', { class: 'close', text: '×', title: 'close', onclick: () => setHash('#') });
    detail.append(close);
    detail.append(el('h2', { id: 'detail-title', 'data-ex': x.ex, text: (DIFF ? (s.side === 0 ? 'A ' : 'B ') : '') + '#' + x.ex + ' ' + x.method + ' ' + x.target }));
    detail.append(
      el('p', { class: 'meta', text: [x.status ? 'status ' + x.status : 'no response', outcome(x), x.role.replace(/_/g, ' '), x.rpc].filter(Boolean).join(' · ') })
    );
    const conn = s.conn.get(x.conn);
    const facts = [
      ['started', wall(s, x.t) + ' (' + off(x.t) + ')'],
      ['connection', '#' + x.conn + (conn ? ' from ' + conn.peer + ' on ' + conn.listener : '')],
      ['client HTTP', x.version],
      ['upstream URL', x.upstream || '(none: answered by mcptap)'],
    ];
    if (conn && conn.tls) {
      const t = conn.tls;
      facts.push(['TLS', [t.version, t.cipher, t.sni ? 'SNI ' + t.sni : '', t.alpn ? 'ALPN ' + t.alpn : '', t.resumed ? 'resumed' : ''].filter(Boolean).join(' · ')]);
    }
    if (x.end) {
      const t = x.end.timings;
      facts.push(['upstream connect', t.upstream_connect_us !== null ? dur(t.upstream_connect_us) : t.reused_connection ? 'reused connection' : '—']);
      facts.push(['request body done', dur(t.request_body_done_us)]);
      facts.push(['time to first byte', dur(t.ttfb_us)]);
      facts.push(['response done', dur(t.response_done_us)]);
      facts.push(['total', dur(t.total_us)]);
      facts.push(['bytes', '↑' + bytes(x.end.bytes[0]) + ' ↓' + bytes(x.end.bytes[1])]);
      if (x.end.error) facts.push(['error', x.end.error]);
      if (x.end.truncated.length) facts.push(['truncated', x.end.truncated.join(', ')]);
    } else {
      facts.push(['end', 'no end recorded (the capture stops while it was in flight)']);
    }
    detail.append(kvTable(facts));

    const fs = s.findingsByEx.get(x.ex);
    if (fs) {
      detail.append(el('h3', { text: 'Findings' }));
      const ul = el('ul', { class: 'findings' });
      for (const f of fs) ul.append(findingItem(s, f));
      detail.append(ul);
    }

    detail.append(el('h3', { text: 'Request headers' }), kvTable(x.req_headers));
    detail.append(el('h3', { text: 'Request body' }), bodyBlock(x.req_body, contentType(x, 'request'), 'request'));

    if (x.status) {
      detail.append(el('h3', { text: 'Response ' + x.status + (x.producer === 'proxy' ? ' (made by mcptap)' : ' (' + (x.resp_version || 'HTTP/?') + ' from upstream)') }));
      detail.append(kvTable(x.resp_headers || []));
    } else {
      detail.append(el('h3', { text: 'Response' }), el('p', { class: 'note', text: 'none: ' + outcome(x) }));
    }
    if (x.stream || x.sse.length) {
      detail.append(el('h3', { text: 'SSE events (' + x.sse.length + ')' }));
      const ul = el('ul', { class: 'events', id: 'sse-events' });
      for (const e of x.sse) {
        const head = ['#' + e.seq, off(e.t), '+' + dur(Math.max(0, e.t - x.t)) + ' after the request'];
        if (e.event !== undefined) head.push('event: ' + e.event);
        if (e.id !== undefined) head.push('id: ' + e.id);
        if (e.retry !== undefined) head.push('retry: ' + e.retry);
        if (!e.dispatched) head.push('not dispatched');
        const li = el('li', { class: 'sse', 'data-seq': e.seq }, [el('div', { class: 'head', text: head.join(' · ') })]);
        for (const c of e.comments || []) li.append(el('div', { class: 'note', text: ': ' + c }));
        if (e.data !== undefined) li.append(el('pre', { class: 'mono', text: pretty(e.data, null) }));
        ul.append(li);
      }
      detail.append(ul);
      const raw = el('details', {}, [el('summary', { text: 'the raw event stream' }), bodyBlock(x.resp_body, 'text/event-stream', 'response')]);
      detail.append(raw);
    } else {
      detail.append(el('h3', { text: 'Response body' }), bodyBlock(x.resp_body, contentType(x, 'response'), 'response'));
    }
    if (x.upgrade) {
      const u = x.upgrade;
      detail.append(
        el('h3', { text: 'Upgraded connection' }),
        kvTable([
          ['protocol', u.protocol],
          ['client → upstream', bytes(u.client_to_upstream)],
          ['upstream → client', bytes(u.upstream_to_client)],
          ['open for', dur(u.duration_us)],
          ['error', u.error || '—'],
        ]),
        el('p', { class: 'note', text: 'mcptap counts the tunnel’s bytes; it does not record its frames.' })
      );
    }
  }

  relayout();
  fromHash(true);
  document.body.setAttribute('data-ready', '1');
  document.body.setAttribute('data-ready-ms', String(Math.round(performance.now())));
  document.body.setAttribute('data-layout-ms', String(Math.round(state.layoutMs)));
})();

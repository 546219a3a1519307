// The superduperdb dashboard: fills the server's pages from its JSON API.
// Values from the database are only ever set as text (textContent) or, for thumbnails and
// audio the server made, as data: URLs it checks first: nothing from data becomes markup.
// A preview cannot be forged by data: the server sends every mapping from the data wrapped as
// {_data: {...}} (superduperdb.base.preview), so an object in a value position is its own.
'use strict';

(() => {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || '';
  const CSRF = meta('csrf-token');
  const ROLE = meta('role');
  const SVG = 'http://www.w3.org/2000/svg';
  const PAGE_SIZE = 50;

  // ----- DOM helpers -------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') node.textContent = String(v);
      else if (k === 'class') node.className = v;
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k === 'style') node.style.cssText = v; // through the CSSOM: allowed by the page's CSP
      else node.setAttribute(k, String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const $ = (sel, root) => (root || document).querySelector(sel);
  const uiLink = (path, text, attrs) => el('a', Object.assign({ href: path, text }, attrs || {}));
  const enc = encodeURIComponent;

  function showError(err) {
    const box = $('#error');
    if (!box) return;
    box.textContent = err ? String(err.message || err) : '';
    box.hidden = !err;
  }

  async function api(method, path, body) {
    const options = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (method !== 'GET') options.headers['X-CSRF-Token'] = CSRF;
    if (body !== undefined) {
      options.headers['Content-Type'] = 'application/json';
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401) {
      window.location.assign('/ui/login');
      throw new Error('Your session has ended: log in again.');
    }
    if (!response.ok) {
      const e = data && data.error ? data.error : { type: 'HTTPError', message: `HTTP ${response.status}` };
      const error = new Error(`${e.type}: ${e.message}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  const when = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleTimeString() : '');
  const ago = (epoch) => {
    if (!epoch) return 'never';
    const s = Math.max(0, Date.now() / 1000 - epoch);
    return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
  };
  const seconds = (job) => {
    if (!job.started_at) return null;
    const end = job.ended_at || Date.now() / 1000;
    return end - job.started_at;
  };
  const finished = (job) => job.status === 'success' || job.status === 'failed';
  const outcome = (job) => {
    const failed = job.result && typeof job.result === 'object' ? job.result.failed : 0;
    return job.status === "success" && failed ? `success, ${failed} row${failed === 1 ? "" : "s"} failed` : job.status;
  };
  // the colour class of a job's status: a success with failed rows is "partial", not green
  const outcomeClass = (job) => (outcome(job) === job.status ? job.status : 'partial');

  function fillRows(table, rows) {
    const body = table.tBodies[0];
    body.replaceChildren(...rows);
  }

  // ----- values (the server's preview form, superduperdb.base.preview) ---------------------
  const isData = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) && Object.prototype.hasOwnProperty.call(v, '_data');

  // The data as it was (the _data wrappers taken off), for showing as JSON text.
  function plain(v) {
    if (Array.isArray(v)) return v.map(plain);
    if (isData(v)) return Object.fromEntries(Object.entries(v._data || {}).map(([k, x]) => [k, plain(x)]));
    return v;
  }

  function value(v) {
    if (v === null || v === undefined) return el('span', { class: 'muted', text: '—' });
    if (isData(v)) return el('code', { class: 'data', text: JSON.stringify(plain(v)) }); // data, whatever its shape
    if (typeof v === 'object' && !Array.isArray(v)) {
      if (typeof v._image === 'string' && v._image.startsWith('data:image/png;base64,')) {
        return el('img', { class: 'thumb', src: v._image, title: v.title, alt: `image ${v.title || ''}` });
      }
      if (typeof v._audio === 'string' && v._audio.startsWith('data:audio/wav;base64,')) {
        return el('audio', { controls: '', preload: 'none', src: v._audio, title: v.title });
      }
      if (typeof v._array === 'string') return el('code', { class: 'array', text: v._array });
      if (typeof v._bytes === 'number') return el('span', { class: 'muted', text: `${v._bytes} bytes` });
      if ('_pending' in v) return el('span', { class: 'muted', text: `not downloaded yet: ${v._pending}` });
      return el('code', { text: JSON.stringify(v) });
    }
    if (Array.isArray(v)) return el('code', { text: JSON.stringify(plain(v)) });
    if (typeof v === 'number') return el('span', { class: 'num', text: Number.isInteger(v) ? v : v.toPrecision(6) });
    return el('span', { text: String(v) });
  }

  // Columns of documents, each model output right after the input it was computed from.
  function columnsOf(docs) {
    const columns = [];
    const seen = new Set();
    const outputs = new Map(); // key -> Set(model)
    for (const doc of docs) {
      for (const k of Object.keys(doc)) {
        if (k === '_outputs') {
          for (const [key, models] of Object.entries(doc._outputs || {})) {
            if (!outputs.has(key)) outputs.set(key, new Set());
            for (const m of Object.keys(models || {})) outputs.get(key).add(m);
          }
        } else if (!seen.has(k)) {
          seen.add(k);
          columns.push({ name: k, get: (d) => d[k] });
        }
      }
    }
    const result = [];
    const place = (key) => {
      for (const model of outputs.get(key) || []) {
        result.push({
          name: `${key} → ${model}`,
          output: true,
          get: (d) => ((d._outputs || {})[key] || {})[model],
        });
      }
      outputs.delete(key);
    };
    for (const c of columns) {
      result.push(c);
      place(c.name);
    }
    for (const key of [...outputs.keys()]) place(key);
    return result;
  }

  function drawDocuments(table, docs, leading) {
    const columns = (leading || []).concat(columnsOf(docs));
    table.tHead.replaceChildren(el('tr', {}, columns.map((c) => el('th', { class: c.output ? 'output' : null, text: c.name }))));
    fillRows(
      table,
      docs.map((d, i) => el('tr', {}, columns.map((c) => el('td', { class: c.cls || (c.output ? 'output' : null) }, c.node ? c.get(d, i) : value(c.get(d, i)))))),
    );
  }

  // ----- plots: inline SVG -------------------------------------------------------------
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'text') node.textContent = String(v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) if (c) node.append(c);
    return node;
  }
  const COLOURS = ['#3b7dd8', '#d8643b', '#3ba55c', '#9b59b6', '#c0392b', '#16a085', '#7f8c8d'];
  const W = 520;
  const H = 160;
  const PAD = { l: 44, r: 10, t: 10, b: 22 };
  const fmt = (x) => (Math.abs(x) >= 100 || Number.isInteger(x) ? x.toFixed(0) : x.toPrecision(3));

  function frame(yMax, xLabel) {
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img', class: 'chart' });
    root.append(
      svg('line', { x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b, class: 'axis' }),
      svg('line', { x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, class: 'axis' }),
      svg('text', { x: PAD.l - 4, y: PAD.t + 8, 'text-anchor': 'end', class: 'tick', text: fmt(yMax) }),
      svg('text', { x: PAD.l - 4, y: H - PAD.b, 'text-anchor': 'end', class: 'tick', text: '0' }),
      svg('text', { x: W - PAD.r, y: H - 6, 'text-anchor': 'end', class: 'tick', text: xLabel || '' }),
    );
    return root;
  }

  // series: [{name, points: [[x, y], ...]}]
  function lineChart(container, series, xLabel) {
    const all = series.flatMap((s) => s.points);
    if (!all.length) {
      container.replaceChildren(el('p', { class: 'muted', text: 'No data yet.' }));
      return;
    }
    const xs = all.map((p) => p[0]);
    const x0 = Math.min(...xs);
    const x1 = Math.max(...xs, x0 + 1);
    const yMax = Math.max(1, ...all.map((p) => p[1]));
    const root = frame(yMax, xLabel);
    const X = (x) => PAD.l + ((x - x0) / (x1 - x0)) * (W - PAD.l - PAD.r);
    const Y = (y) => H - PAD.b - (y / yMax) * (H - PAD.t - PAD.b);
    series.forEach((s, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const d = s.points.map((p, j) => `${j ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
      root.append(svg('path', { d, fill: 'none', stroke: colour, 'stroke-width': 2 }, svg('title', { text: s.name })));
      const last = s.points[s.points.length - 1];
      if (last) root.append(svg('circle', { cx: X(last[0]), cy: Y(last[1]), r: 3, fill: colour }, svg('title', { text: `${s.name}: ${fmt(last[1])}` })));
    });
    const legend = el('div', { class: 'legend' }, series.map((s, i) => el('span', {}, el('i', { style: `background:${COLOURS[i % COLOURS.length]}` }), s.name)));
    container.replaceChildren(root, legend);
  }

  // Points over time, joined per series: [{name, points: [[epoch seconds, y, label], ...]}];
  // the x axis spans the first to the last point (their times at its ends), the y axis 0 to
  // yMax (at least the largest value).
  function timeChart(container, series, yMax) {
    const all = series.flatMap((s) => s.points);
    if (!all.length) {
      container.replaceChildren(el('p', { class: 'muted', text: 'No data yet.' }));
      return;
    }
    const xs = all.map((p) => p[0]);
    let x0 = Math.min(...xs);
    let x1 = Math.max(...xs);
    if (x1 - x0 < 1e-3) {
      x0 -= 1;
      x1 += 1;
    }
    const top = Math.max(yMax || 0, ...all.map((p) => p[1]), 1e-9);
    const root = frame(top, '');
    const inset = 10;
    const X = (x) => PAD.l + inset + ((x - x0) / (x1 - x0)) * (W - PAD.l - PAD.r - 2 * inset);
    const Y = (y) => H - PAD.b - (y / top) * (H - PAD.t - PAD.b);
    const stamp = (t) => new Date(t * 1000).toLocaleString();
    root.append(
      svg('text', { x: PAD.l + inset, y: H - 6, 'text-anchor': 'start', class: 'tick', text: stamp(Math.min(...xs)) }),
      svg('text', { x: W - PAD.r, y: H - 6, 'text-anchor': 'end', class: 'tick', text: stamp(Math.max(...xs)) }),
    );
    series.forEach((s, i) => {
      const colour = COLOURS[i % COLOURS.length];
      const points = s.points.slice().sort((a, b) => a[0] - b[0]);
      const d = points.map((p, j) => `${j ? 'L' : 'M'}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ');
      root.append(svg('path', { d, fill: 'none', stroke: colour, 'stroke-width': 2, class: 'series', 'data-series': s.name }, svg('title', { text: s.name })));
      for (const p of points) {
        const label = p[2] ? `${s.name}, ${p[2]}: ${fmt(p[1])}` : `${s.name}: ${fmt(p[1])}`;
        root.append(svg('circle', { cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 3.5, fill: colour, class: 'point', 'data-series': s.name }, svg('title', { text: label })));
      }
    });
    const legend = el('div', { class: 'legend' }, series.map((s, i) => el('span', {}, el('i', { style: `background:${COLOURS[i % COLOURS.length]}` }), s.name)));
    container.replaceChildren(root, legend);
  }

  // bars: [{label, value, title}]
  function barChart(container, bars, xLabel) {
    if (!bars.length) {
      container.replaceChildren(el('p', { class: 'muted', text: 'No data yet.' }));
      return;
    }
    const yMax = Math.max(...bars.map((b) => b.value), 1e-9);
    const root = frame(yMax, xLabel);
    const slot = (W - PAD.l - PAD.r) / bars.length;
    bars.forEach((b, i) => {
      const h = (Math.max(0, b.value) / yMax) * (H - PAD.t - PAD.b);
      root.append(
        svg(
          'rect',
          { x: PAD.l + i * slot + slot * 0.1, y: H - PAD.b - h, width: Math.max(1, slot * 0.8), height: h, class: 'bar' },
          svg('title', { text: b.title || `${b.label}: ${fmt(b.value)}` }),
        ),
      );
    });
    container.replaceChildren(root);
  }

  // ----- chunks (superduperdb.store.chunks) ---------------------------------------------------
  // A chunk table's row: a link to its table, and whose chunks it holds.
  function tableRow(t) {
    const of = t.chunks_of;
    return el(
      'tr',
      {},
      el('td', {}, uiLink(`/ui/tables/${enc(t.name)}`, t.name), of ? el('span', { class: 'muted', text: ` (chunks of ${of.table}.${of.key} by ${of.chunker})` }) : null),
      el('td', { class: 'num', text: t.rows }),
    );
  }
  // The page of a table filtered by a JSON filter (the table page reads it from ?filter=).
  const filteredTable = (table, filter) => `/ui/tables/${enc(table)}?${new URLSearchParams({ filter: JSON.stringify(filter) })}`;
  // A row key as the JSON of a filter can name it (text or a number; a preview is neither).
  const isKey = (k) => typeof k === 'string' || (typeof k === 'number' && Number.isFinite(k));

  // Python counts characters by code point, JavaScript strings by UTF-16 unit: offsets from
  // the server index the code points.
  const TRUNCATED = / \(\d+ characters\)$/; // what the preview adds to a text it cut
  const CONTEXT = 160; // characters of the row's text shown either side of the best chunk

  // An excerpt of a row's text around a chunk: the chunk's span in <mark> (text nodes only).
  function excerpt(text, chunk) {
    const start = Number(chunk.start);
    const end = Number(chunk.end);
    if (typeof text === 'string' && Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end >= start) {
      const points = Array.from(text);
      const cut = text.match(TRUNCATED);
      const kept = cut ? points.length - Array.from(cut[0]).length - 1 : points.length; // less the '…'
      if (end <= kept) {
        const from = Math.max(0, start - CONTEXT);
        const to = Math.min(points.length, end + CONTEXT);
        return el(
          'div',
          { class: 'excerpt' },
          from > 0 ? '…' : null,
          points.slice(from, start).join(''),
          el('mark', { text: points.slice(start, end).join('') }),
          points.slice(end, to).join(''),
          to < points.length ? '…' : null,
        );
      }
    }
    // the span lies past what the preview sent of the text: the chunk's own text
    return el('div', { class: 'excerpt' }, start > 0 ? '… ' : null, el('mark', { text: String(chunk.text ?? '') }), ' …');
  }

  // A row's matching chunks (the server's _chunks, previewed: each {_data: {...}}, a long list
  // cut to its first 20 and '… (N items)'), best first, and how many there are.
  function matchingChunks(list) {
    if (!Array.isArray(list)) return { chunks: [], count: 0 };
    const chunks = list.filter(isData).map(plain);
    const more = list.length && typeof list[list.length - 1] === 'string' ? list[list.length - 1].match(/\((\d+) items\)$/) : null;
    return { chunks, count: more ? Number(more[1]) : chunks.length };
  }

  // ----- pages ---------------------------------------------------------------------------
  const pages = {};

  pages.overview = async () => {
    const o = await api('GET', '/overview');
    $('#backend').textContent = `${o.backend} · artifacts: ${o.artifacts}`;
    fillRows($('#tables'), o.tables.map(tableRow));
    const rows = [];
    for (const [type, ids] of Object.entries(o.components)) {
      for (const [id, versions] of Object.entries(ids)) {
        rows.push(el('tr', {}, el('td', { text: type }), el('td', { text: id }), el('td', { text: versions.join(', ') })));
      }
    }
    fillRows($('#components'), rows);
    const name = (ref) => `${ref[0]} ${ref[1]} v${ref[2]}`;
    fillRows($('#dependencies'), o.dependencies.map((d) => el('tr', {}, el('td', { text: name(d.from) }), el('td', { text: '→' }), el('td', { text: name(d.to) }))));
  };

  // API models' usage per watcher, and a plot of throughput against the rate limit each
  async function drawUsage(watchers) {
    const using = watchers.filter((w) => w.usage);
    $('#api-usage').hidden = !using.length;
    if (!using.length) return;
    fillRows(
      $('#usage'),
      using.map((w) => {
        const u = w.usage;
        const cost = u.cost === null || u.cost === undefined ? '–' : u.cost.toFixed(4);
        return el('tr', { dataset: { watcher: w.watcher } }, el('td', {}, el('code', { text: w.watcher })), ...[u.requests, (u.input_tokens || 0) + (u.output_tokens || 0), u.errors, u.rate_limited].map((v) => el('td', { class: 'num', text: v ?? 0 })), el('td', { class: 'num cost', text: cost }));
      }),
    );
    const box = $('#usage-plots');
    for (const w of using) {
      const { usage } = await api('GET', `/watchers/${enc(w.watcher)}/usage`);
      if (!usage || !usage.series) continue;
      const limits = usage.limits || {};
      const byTokens = Boolean(limits.tokens) || !limits.requests;
      const step = usage.bucket_s || 10;
      const rate = usage.series.map((p) => [p[0] + step, (byTokens ? p[2] : p[1]) / step]);
      const allowed = byTokens ? limits.tokens : limits.requests;
      const series = [{ name: `${byTokens ? 'tokens' : 'requests'}/s`, points: rate }];
      if (allowed && rate.length) series.push({ name: 'limit', points: [[rate[0][0], allowed / limits.window], [rate[rate.length - 1][0], allowed / limits.window]] });
      let figure = box.querySelector(`figure[data-watcher="${CSS.escape(w.watcher)}"]`);
      if (!figure) {
        figure = el('figure', { dataset: { watcher: w.watcher } }, el('figcaption', { text: `${w.watcher}: throughput against the limit` }), el('div', { class: 'plot' }));
        box.append(figure);
      }
      timeChart(figure.querySelector('.plot'), series, allowed ? allowed / limits.window : 0);
    }
  }

  pages.freshness = async () => {
    const history = new Map(); // watcher -> [[t, backlog, lag]]
    const shownFailed = new Map(); // watcher -> failed count whose ledger is shown
    const retried = new Map(); // watcher -> the last retry's outcome, kept when its ledger is redrawn
    const started = Date.now() / 1000;

    async function ledger(watcher, failed) {
      const box = $('#ledgers');
      let section = box.querySelector(`section[data-watcher="${CSS.escape(watcher)}"]`);
      if (!failed) {
        if (section) section.remove();
        shownFailed.delete(watcher);
        if (!box.querySelector('section')) box.replaceChildren(el('p', { class: 'muted', text: 'No failed rows.' }));
        return;
      }
      if (shownFailed.get(watcher) === failed && section) return;
      shownFailed.set(watcher, failed);
      const data = await api('GET', `/watchers/${enc(watcher)}/failures?limit=200`);
      const result = el('span', { class: 'result' });
      if (retried.has(watcher)) result.replaceChildren(...retried.get(watcher).map((n) => n.cloneNode(true)));
      const retry =
        ROLE === 'write'
          ? el('button', {
              type: 'button',
              class: 'retry',
              text: 'Retry failed rows',
              on: {
                click: async (event) => {
                  event.target.disabled = true;
                  result.textContent = 'retrying…';
                  try {
                    const { job } = await api('POST', `/watchers/${enc(watcher)}/retry`);
                    const r = job.result || {};
                    const shown = [uiLink(`/ui/jobs/${enc(job.id)}`, `job ${job.id.slice(0, 12)}`), document.createTextNode(`: ${outcome(job)}; ${r.computed ?? 0} computed, ${r.failed ?? 0} failed`)];
                    retried.set(watcher, shown);
                    result.replaceChildren(...shown.map((n) => n.cloneNode(true)));
                    shownFailed.delete(watcher); // the ledger is redrawn with the new attempts; the outcome stays
                    await tick();
                  } catch (err) {
                    result.textContent = String(err.message || err);
                  } finally {
                    event.target.disabled = false;
                  }
                },
              },
            })
          : null;
      const table = el(
        'table',
        { class: 'grid ledger' },
        el('thead', {}, el('tr', {}, ['row', 'error', 'message', 'attempts', 'last try'].map((h) => el('th', { text: h })))),
        el(
          'tbody',
          {},
          data.failures.map((f) => el('tr', {}, el('td', { text: f.row }), el('td', { text: f.error }), el('td', { class: 'message', text: f.message }), el('td', { class: 'num', text: f.attempts }), el('td', { text: when(f.failed_at) }))),
        ),
      );
      const fresh = el('section', { dataset: { watcher } }, el('h3', {}, el('code', { text: watcher }), ` · ${failed} failed rows `), retry, result, table);
      if (section) section.replaceWith(fresh);
      else {
        if (!box.querySelector('section')) box.replaceChildren();
        box.append(fresh);
      }
    }

    async function tick() {
      const status = await api('GET', '/status');
      const now = Date.now() / 1000;
      fillRows(
        $('#watchers'),
        status.watchers.map((w) =>
          el(
            'tr',
            { dataset: { watcher: w.watcher } },
            el('td', {}, el('code', { text: w.watcher }), w.active ? null : el('span', { class: 'muted', text: ' (inactive)' })),
            el('td', {}, uiLink(`/ui/tables/${enc(w.table)}`, w.table), w.table_missing ? el('span', { class: 'bad missing', text: ' (table missing)' }) : null),
            ...['rows', 'current', 'stale', 'failed', 'backlog', 'jobs'].map((k) => el('td', { class: `num ${k}${k === 'failed' && w.failed ? ' bad' : ''}`, text: w[k] ?? 0 })),
            el('td', { class: 'num lag', text: w.lag_s.toFixed(1) }),
          ),
        ),
      );
      fillRows(
        $('#vector-indexes'),
        (status.vector_indexes || []).map((v) =>
          el(
            'tr',
            { dataset: { index: v.vector_index } },
            el('td', {}, el('code', { text: v.vector_index }), v.loaded ? null : el('span', { class: 'muted', text: ' (not loaded here)' })),
            ...(v.loaded
              ? [
                  el('td', { class: 'num engine', text: v.engine }),
                  el('td', { class: 'num outputs', text: v.outputs }),
                  ...['missing', 'stale', 'extra'].map((k) => el('td', { class: `num ${k}${v[k] ? ' bad' : ''}`, text: v[k] })),
                  el('td', { class: 'num checked', text: v.checked_s.toFixed(1) }),
                  el('td', { class: 'num caught-up', text: v.caught_up_s.toFixed(1) }),
                ]
              : [el('td', { colspan: 7, class: 'muted', text: '' })]),
          ),
        ),
      );
      for (const w of status.watchers) {
        if (!history.has(w.watcher)) history.set(w.watcher, []);
        const h = history.get(w.watcher);
        h.push([now - started, w.backlog, w.lag_s]);
        if (h.length > 300) h.shift();
        await ledger(w.watcher, w.failed);
      }
      await drawUsage(status.watchers);
      const series = (i) => [...history.entries()].map(([name, h]) => ({ name, points: h.map((p) => [p[0], p[i]]) }));
      lineChart($('#plot-backlog'), series(1), 'seconds on this page');
      lineChart($('#plot-lag'), series(2), 'seconds on this page');
      const c = status.change_capture;
      $('#capture').textContent = c.running
        ? 'Change capture is running in this server.'
        : 'Change capture is not running in this server (a `superduperdb cdc` process shows as positions that keep moving).';
      if (c.error) $('#capture').append(el('span', { class: 'bad', text: ` Last error: ${c.error}` }));
      fillRows($('#positions'), c.positions.map((p) => el('tr', {}, el('td', { text: p.stream }), el('td', {}, el('code', { text: p.position })), el('td', { text: ago(p.updated_at) }))));
      $('#updated').textContent = `Updated ${new Date().toLocaleTimeString()}.`;
    }

    await tick();
    setInterval(() => tick().then(() => showError(null), showError), 2000);
  };

  pages.jobs = async () => {
    const form = $('#job-filters');
    const params = new URLSearchParams(window.location.search);
    form.status.value = params.get('status') || '';
    form.component.value = params.get('component') || '';

    async function load() {
      const query = new URLSearchParams({ log: 'false', limit: '100' });
      if (form.status.value) query.set('status', form.status.value);
      if (form.component.value.trim()) query.set('component', form.component.value.trim());
      const { jobs } = await api('GET', `/jobs?${query}`);
      fillRows(
        $('#jobs'),
        jobs.map((j) => {
          const s = seconds(j);
          const pct = j.total ? Math.min(100, (100 * j.done) / j.total) : finished(j) ? 100 : 0;
          return el(
            'tr',
            { dataset: { job: j.id } },
            el('td', {}, uiLink(`/ui/jobs/${enc(j.id)}`, j.id, { class: 'mono' })),
            el('td', { text: j.method }),
            el('td', { text: j.component || '' }),
            el('td', { class: `status ${outcomeClass(j)}`, text: outcome(j) }),
            el('td', {}, el('div', { class: 'progress small', title: `${j.done}/${j.total ?? '?'}` }, el('div', { class: 'bar', style: `width:${pct}%` })), ` ${j.done}/${j.total ?? '?'}`),
            el('td', { class: 'mono', text: j.worker || '' }),
            el('td', { text: when(j.created_at) }),
            el('td', { class: 'num', text: s === null ? '' : s.toFixed(2) }),
          );
        }),
      );
      const done = jobs.filter((j) => j.ended_at && j.started_at).reverse();
      barChart($('#plot-durations'), done.map((j) => ({ label: j.id.slice(0, 8), value: j.ended_at - j.started_at, title: `${j.method} ${j.component || ''}: ${(j.ended_at - j.started_at).toFixed(3)} s` })), 'oldest → newest');
    }

    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const query = new URLSearchParams();
      if (form.status.value) query.set('status', form.status.value);
      if (form.component.value.trim()) query.set('component', form.component.value.trim());
      window.history.replaceState(null, '', `?${query}`);
      load().then(() => showError(null), showError);
    });
    await load();
    setInterval(() => load().then(() => showError(null), showError), 3000);
  };

  pages.job = async () => {
    const id = document.body.dataset.jobId;
    const log = $('#log');
    let offset = 0;
    const cancel = $('#cancel');
    if (cancel) {
      cancel.addEventListener('click', async () => {
        cancel.disabled = true;
        try {
          await api('POST', `/jobs/${enc(id)}/cancel`);
          $('#cancel-result').textContent = 'Cancelled.';
        } catch (err) {
          $('#cancel-result').textContent = String(err.message || err);
        } finally {
          cancel.disabled = false;
        }
      });
    }
    async function poll() {
      const job = await api('GET', `/jobs/${enc(id)}?log_offset=${offset}`);
      if (job.log) log.append(document.createTextNode(job.log));
      offset = job.log_size;
      const s = seconds(job);
      const fields = [
        ['method', job.method],
        ['component', job.component || ''],
        ['status', outcome(job)],
        ['progress', `${job.done}/${job.total ?? '?'}`],
        ['worker', job.worker || ''],
        ['created', when(job.created_at)],
        ['started', when(job.started_at)],
        ['ended', when(job.ended_at)],
        ['seconds', s === null ? '' : s.toFixed(3)],
        ['attempts', job.attempts],
      ];
      const colour = { status: ` status ${outcomeClass(job)}` };
      $('#job-fields').replaceChildren(...fields.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { class: `field-${k}${colour[k] || ''}`, text: v })]));
      if (job.dependencies && job.dependencies.length) {
        $('#job-fields').append(el('dt', { text: 'after' }), el('dd', {}, job.dependencies.map((d) => [uiLink(`/ui/jobs/${enc(d)}`, d.slice(0, 12)), ' '])));
      }
      const pct = job.total ? Math.min(100, (100 * job.done) / job.total) : finished(job) ? 100 : 0;
      $('#job-bar').style.width = `${pct}%`;
      if (job.error) {
        $('#error-section').hidden = false;
        $('#job-error').textContent = job.error;
      }
      if (cancel) cancel.hidden = finished(job);
      if (!finished(job)) setTimeout(() => poll().catch(showError), 500);
      else document.body.dataset.finished = 'true';
    }
    await poll();
  };

  pages.tables = async () => {
    const o = await api('GET', '/overview');
    fillRows($('#tables'), o.tables.map(tableRow));
  };

  function parseFilter(text) {
    const trimmed = (text || '').trim();
    if (!trimmed) return {};
    let filter;
    try {
      filter = JSON.parse(trimmed);
    } catch (err) {
      throw new Error(`The filter is not JSON: ${err.message}. Example: {"label": {"$lt": 5}}`);
    }
    if (!filter || typeof filter !== 'object' || Array.isArray(filter)) throw new Error('The filter is a JSON object, e.g. {"label": 7}.');
    return filter;
  }

  pages.table = async () => {
    const table = document.body.dataset.table;
    const form = $('#table-filter');
    let skip = 0;
    let total = null;
    // ?filter={...}: a link may open the page filtered (a row's chunks)
    const given = new URLSearchParams(window.location.search).get('filter');
    if (given) form.filter.value = given;
    let filter = {};
    try {
      filter = parseFilter(form.filter.value);
    } catch (err) {
      showError(err);
    }
    let chunkTables = null; // the chunk tables of this table's rows (from /overview, once)

    // a link to each row's chunks, per chunk table of this table
    function chunkLinks() {
      return (chunkTables || []).map((t) => ({
        name: chunkTables.length > 1 ? `chunks (${t.chunks_of.key}, ${t.chunks_of.chunker})` : 'chunks',
        node: true,
        cls: 'chunks',
        get: (d) => {
          const key = d[t.chunks_of.row_key];
          return isKey(key) ? uiLink(filteredTable(t.name, { parent: key }), 'chunks', { class: 'chunks-link', title: `the chunks of this row in ${t.name}` }) : null;
        },
      }));
    }

    async function load() {
      const started = performance.now();
      const [page, count, o] = await Promise.all([
        api('POST', '/execute', { query: { kind: 'find', table, filter, limit: PAGE_SIZE, skip }, preview: true }),
        total === null ? api('POST', '/execute', { query: { kind: 'count', table, filter } }) : null,
        chunkTables === null ? api('GET', '/overview').catch(() => ({ tables: [] })) : null, // the rows come first
      ]);
      if (count) total = count.count;
      if (o) chunkTables = o.tables.filter((t) => t.chunks_of && t.chunks_of.table === table);
      drawDocuments($('#rows'), page.documents, chunkLinks());
      const last = Math.min(skip + page.documents.length, total);
      $('#page-info').textContent = total ? `rows ${skip + 1}–${last} of ${total}` : 'no rows';
      $('#count').textContent = `${total} rows match · ${(performance.now() - started).toFixed(0)} ms`;
      $('#prev').disabled = skip === 0;
      $('#next').disabled = skip + PAGE_SIZE >= total;
    }
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      try {
        filter = parseFilter(form.filter.value);
      } catch (err) {
        showError(err);
        return;
      }
      skip = 0;
      total = null;
      const query = new URLSearchParams();
      if (Object.keys(filter).length) query.set('filter', JSON.stringify(filter));
      window.history.replaceState(null, '', query.toString() ? `?${query}` : window.location.pathname);
      load().then(() => showError(null), showError);
    });
    $('#prev').addEventListener('click', () => {
      skip = Math.max(0, skip - PAGE_SIZE);
      load().catch(showError);
    });
    $('#next').addEventListener('click', () => {
      skip += PAGE_SIZE;
      load().catch(showError);
    });
    await load();
  };

  function readFile(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result).split(',', 2)[1]);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  // A search's steps as the server timed them (like_ms, match_ms, fuse_ms, rows_ms, rerank_ms).
  const steps = (timings) => Object.entries(timings || {}).map(([step, ms]) => `${step.replace(/_ms$/, '')} ${Number(ms).toFixed(1)} ms`).join(', ');
  const fmtScore = (x) => (typeof x === 'number' ? x.toPrecision(4) : '—');
  // One part's rank and score of a fused result ('#2 · 0.2582', or '—' where that part did not
  // find it), from its _ranks and _scores (previewed like any mapping: {_data: {...}})
  function partOf(d, part) {
    const ranks = plain(d._ranks) || {};
    const scores = plain(d._scores) || {};
    return ranks[part] ? `#${ranks[part]} · ${fmtScore(scores[part])}` : '—';
  }

  pages.search = async () => {
    const form = $('#search');
    const { indexes, keyword_indexes: keywords = [] } = await api('GET', '/overview');
    if (!indexes.length && !keywords.length) {
      form.replaceChildren(el('p', { class: 'muted', text: 'There is no index to search yet: add a VectorIndex to search by meaning, or a KeywordIndex to search by words.' }));
      return;
    }
    // an index of chunks searches the rows they come from (or, "show chunks", the chunks)
    const tableOf = (ix) => (ix.chunks_of ? ix.chunks_of.table : ix.table);
    const label = (ix) => (ix.chunks_of ? `${ix.identifier} (${ix.chunks_of.table}.${ix.chunks_of.key}, by chunks)` : `${ix.identifier} (${ix.table})`);
    form.index.replaceChildren(...indexes.map((ix) => el('option', { value: ix.identifier, text: label(ix) })));
    form.keyword.replaceChildren(...keywords.map((ix) => el('option', { value: ix.identifier, text: ix.chunks_of ? label(ix) : `${ix.identifier} (${ix.table}.${ix.key})` })));
    // the kinds of search the indexes there are allow: vector, keyword, hybrid (both)
    for (const option of form.mode.options) {
      option.disabled = (option.value !== 'keyword' && !indexes.length) || (option.value !== 'vector' && !keywords.length);
    }
    form.mode.value = indexes.length ? 'vector' : 'keyword';
    const current = () => indexes.find((ix) => ix.identifier === form.index.value);
    const currentKeyword = () => keywords.find((ix) => ix.identifier === form.keyword.value);
    const image = (k) => !!(k && k.encoder && /image/i.test(k.encoder));
    function keys() {
      const ix = current();
      if (ix) form.key.replaceChildren(...ix.keys.map((k, i) => el('option', { value: String(i), text: k.encoder ? `${k.key} (${k.encoder})` : k.key })));
      mode();
    }
    function mode() {
      const m = form.mode.value;
      const ix = m === 'keyword' ? null : current();
      $('#vector-index').hidden = !ix;
      $('#vector-key').hidden = !ix;
      $('#keyword-index').hidden = m === 'vector';
      $('#fusion').hidden = m !== 'hybrid';
      const byImage = m === 'vector' && image(ix.keys[Number(form.key.value)]); // words search text only
      $('#drop').hidden = !byImage;
      form.text.closest('label').hidden = byImage;
      $('#show-chunks').hidden = !(m === 'vector' && ix.chunks_of);
    }
    form.mode.addEventListener('change', mode);
    form.index.addEventListener('change', keys);
    form.key.addEventListener('change', mode);
    // showing chunks or rows asks again, once there was a search
    form.chunks.addEventListener('change', () => {
      if (searches) form.requestSubmit();
    });
    keys();
    // an image dropped anywhere on the form is the query (image keys)
    form.addEventListener('dragover', (event) => event.preventDefault());
    form.addEventListener('drop', (event) => {
      event.preventDefault();
      if ($('#drop').hidden || !event.dataTransfer.files.length) return;
      form.image.files = event.dataTransfer.files;
      $('#drop').classList.add('dropped');
    });

    // The /execute query of the form: "like" (vector), "match" (keyword), or both and "fuse".
    async function searchQuery(n) {
      const m = form.mode.value;
      const query = { kind: 'find', filter: parseFilter(form.filter.value) };
      let text = form.text.value;
      if (m !== 'keyword') {
        const ix = current();
        const k = ix.keys[Number(form.key.value)];
        let v = text;
        if (m === 'vector' && image(k)) {
          const file = form.image.files[0];
          if (!file) throw new Error('Drop or choose an image to search with.');
          v = { _content: { encoder: k.encoder, version: null, bytes: await readFile(file) } };
          text = null;
        }
        query.like = { value: { [k.key]: v }, index: ix.identifier, n };
        if (m === 'vector' && ix.chunks_of && form.chunks.checked) query.like.chunks = true;
        query.table = tableOf(ix);
      }
      if (m !== 'vector') {
        const kx = currentKeyword();
        const table = tableOf(kx);
        if (query.table && query.table !== table) {
          throw new Error(`Vector index ${query.like.index} searches table ${query.table} and keyword index ${kx.identifier} table ${table}: a hybrid search takes two indexes of one table.`);
        }
        query.match = { value: { [kx.chunks_of ? kx.chunks_of.key : kx.key]: text }, index: kx.identifier, n };
        query.table = table;
      }
      if (m === 'hybrid') query.fuse = { method: form.fusion.value };
      if (text !== null && !text.trim()) throw new Error('Type something to search for.');
      return query;
    }

    // results belong to the query they answer: cleared when a search starts or fails, and a
    // slow answer (the model loading, seconds cold) never replaces a newer search's results
    let searches = 0;
    function clearResults(text) {
      $('#results').tHead.replaceChildren();
      $('#results').tBodies[0].replaceChildren();
      $('#plot-scores').replaceChildren();
      $('#timing').textContent = text;
    }
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const search = ++searches;
      const button = form.querySelector('button[type=submit]');
      try {
        const n = Math.max(1, Math.min(1000, Number(form.n.value) || 10));
        const query = await searchQuery(n);
        showError(null);
        clearResults('searching… (the first search loads the model: it can take a few seconds)');
        document.body.dataset.searching = 'true';
        button.disabled = true;
        const started = performance.now();
        const chunks = !!(query.like && query.like.chunks);
        const ix = query.like ? current() : null;
        const kx = query.match ? currentKeyword() : null;
        const of = (ix && ix.chunks_of) || (kx && kx.chunks_of) || null;
        const body = await api('POST', '/execute', { query, preview: true });
        const roundTrip = performance.now() - started;
        if (search !== searches) return;
        const docs = body.documents;
        const timed = steps(body.timings);
        $('#timing').textContent = `${docs.length} ${chunks ? 'chunks' : 'results'} · search ${(1000 * body.seconds).toFixed(1)} ms on the server, ${roundTrip.toFixed(0)} ms here${timed ? ` · ${timed}` : ''}`;
        const leading = [
          { name: '#', get: (_d, i) => i + 1 },
          { name: 'score', get: (_d, i) => docs[i]._score },
        ];
        if (query.fuse) {
          // each part's rank and score: where the vector and the keyword search placed the row
          leading.push({ name: 'vector', cls: 'part like', get: (_d, i) => partOf(docs[i], 'like') });
          leading.push({ name: 'keyword', cls: 'part match', get: (_d, i) => partOf(docs[i], 'match') });
        }
        if (chunks) {
          // the chunks themselves: text, the row each comes from (a link to it), where in its text
          const span = (d) => (Number.isInteger(d.start) && Number.isInteger(d.end) ? `${d.start}–${d.end}` : '');
          const parent = (d) => (isKey(d.parent) ? uiLink(filteredTable(of.table, { [of.row_key]: d.parent }), String(d.parent), { class: 'parent-link' }) : value(d.parent));
          const columns = [
            ...leading,
            { name: 'text', cls: 'chunk-text', get: (d) => d.text },
            { name: 'parent', node: true, cls: 'parent', get: parent },
            { name: 'span', cls: 'span num', get: span },
            { name: 'chunk', get: (d) => d.chunk },
          ];
          $('#results').tHead.replaceChildren(el('tr', {}, columns.map((c) => el('th', { text: c.name }))));
          fillRows($('#results'), docs.map((d, i) => el('tr', { dataset: { chunk: isKey(d._id) ? d._id : '' } }, columns.map((c) => el('td', { class: c.cls || null }, c.node ? c.get(d, i) : value(c.get(d, i)))))));
        } else {
          const rest = docs.map((d) => {
            const copy = Object.assign({}, d);
            for (const k of ['_score', '_scores', '_ranks', '_chunks']) delete copy[k];
            return copy;
          });
          if (of) {
            // each row once, by its best chunk: its text around that chunk, the chunk marked
            leading.push({
              name: 'match',
              node: true,
              cls: 'match',
              get: (_d, i) => {
                const { chunks: found, count } = matchingChunks(docs[i]._chunks);
                if (!found.length) return el('span', { class: 'muted', text: 'no chunk' });
                return el('div', {}, excerpt(docs[i][of.key], found[0]), el('div', { class: 'muted match-count', text: `${count} matching chunk${count === 1 ? '' : 's'}` }));
              },
            });
          }
          drawDocuments($('#results'), rest, leading);
        }
        barChart($('#plot-scores'), docs.map((d, i) => ({ label: String(i + 1), value: d._score, title: `#${i + 1}: ${Number(d._score).toFixed(4)}` })), 'rank');
        showError(null);
      } catch (err) {
        if (search !== searches) return;
        clearResults('');
        showError(err);
      } finally {
        if (search === searches) {
          button.disabled = false;
          delete document.body.dataset.searching;
        }
      }
    });
  };

  // ----- evaluation (superduperdb.vector_search.evaluate, .staging) ---------------------------
  // The metric names of an evaluation at its k, and how the page rounds them.
  const METRICS = [
    ['recall', (k) => `recall@${k}`],
    ['precision', (k) => `precision@${k}`],
    ['mrr', () => 'mrr'],
    ['ndcg', (k) => `ndcg@${k}`],
    ['latency_p50_ms', () => 'latency_p50_ms'],
    ['latency_p95_ms', () => 'latency_p95_ms'],
  ];
  const metricOf = (e, which) => {
    const found = METRICS.find(([name]) => name === which);
    const v = found ? (e.metrics || {})[found[1](e.k)] : undefined;
    return typeof v === 'number' ? v : null;
  };
  const shownMetric = (name, v) => (v === null ? '' : name.startsWith('latency') ? v.toFixed(1) : v.toFixed(3));
  const dateTime = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString() : '');

  // "version 1 staged: building 40/120 rows", "... built, not serving: promote with ..."
  function stagedLine(ix, s, set) {
    const head = `version ${s.version} staged: `;
    let text;
    if (s.state === 'built') {
      text = `${head}built, not serving: promote with db.promote(${JSON.stringify(ix.identifier)}, ${JSON.stringify(set || 'evaluation-set')})`;
    } else if (s.state === 'failed') {
      text = `${head}its build failed`;
    } else {
      text = `${head}building ${s.done}/${s.total ?? '?'} rows`;
    }
    const links = (s.jobs || []).flatMap((j) => [' ', uiLink(`/ui/jobs/${enc(j.id)}`, `${j.method} ${j.status}`, { class: `job-link status ${j.status}` })]);
    return el('li', { class: `staged ${s.state}`, dataset: { version: s.version, state: s.state } }, el('span', { class: 'staged-text', text }), links.length ? el('span', { class: 'muted' }, ' · jobs:', links) : null);
  }

  pages.evaluation = async () => {
    const form = $('#evaluation');
    let { indexes } = await api('GET', '/overview');
    if (!indexes.length) {
      form.replaceChildren(el('p', { class: 'muted', text: 'There is no vector index yet: add a VectorIndex, then an EvaluationSet, to measure it.' }));
      $('#serving').textContent = '';
      return;
    }
    const given = new URLSearchParams(window.location.search).get('index');
    form.index.replaceChildren(...indexes.map((ix) => el('option', { value: ix.identifier, text: `${ix.identifier} (${ix.table})` })));
    if (given && indexes.some((ix) => ix.identifier === given)) form.index.value = given;
    const sets = (await api('GET', '/components?type_id=evaluation_set')).result || [];
    form.set.replaceChildren(...sets.map((name) => el('option', { value: name, text: name })));
    const button = $('#evaluate');
    if (!sets.length) {
      form.set.replaceChildren(el('option', { value: '', text: 'none: add an EvaluationSet' }));
      button.disabled = true;
    }
    if (ROLE === 'read') {
      button.disabled = true;
      button.title = 'this session may only read';
    }
    let evaluations = [];
    const current = () => indexes.find((ix) => ix.identifier === form.index.value);

    function drawVersions() {
      const ix = current();
      $('#serving').textContent = ix.serving === null || ix.serving === undefined ? 'No version serves yet.' : `Version ${ix.serving} serves · versions kept: ${(ix.versions || []).join(', ')}`;
      $('#serving').dataset.serving = ix.serving ?? '';
      $('#staged').replaceChildren(...(ix.staged || []).map((s) => stagedLine(ix, s, form.set.value)));
    }

    function drawPlot() {
      const which = form.metric.value;
      const byVersion = new Map();
      for (const e of evaluations) {
        const v = metricOf(e, which);
        if (v === null) continue;
        const name = `version ${e.version}`;
        if (!byVersion.has(name)) byVersion.set(name, []);
        byVersion.get(name).push([e.created_at, v, dateTime(e.created_at)]);
      }
      const series = [...byVersion.entries()].sort((a, b) => a[0].localeCompare(b[0], undefined, { numeric: true })).map(([name, points]) => ({ name, points }));
      $('#plot-caption').textContent = `${form.metric.selectedOptions[0].text} over time, one series per index version`;
      timeChart($('#plot-metric'), series, which.startsWith('latency') ? 0 : 1); // a share: 0 to 1
    }

    function drawTable() {
      const rows = evaluations
        .slice()
        .reverse()
        .map((e) =>
          el(
            'tr',
            { dataset: { evaluation: e.id } },
            el('td', { class: 'when', text: dateTime(e.created_at) }),
            el('td', { class: 'num version', text: e.version ?? '' }),
            el('td', { class: 'model', text: Array.isArray(e.model) ? `${e.model[0]} v${e.model[1]}` : '' }),
            el('td', { class: 'engine', text: e.engine || '' }),
            el('td', { class: 'num k', text: e.k }),
            el('td', { class: 'set', text: e.evaluation_set }),
            METRICS.map(([name]) => el('td', { class: `num metric ${name}`, text: shownMetric(name, metricOf(e, name)) })),
          ),
        );
      fillRows($('#evaluations'), rows.length ? rows : [el('tr', {}, el('td', { colspan: 12, class: 'muted', text: 'No evaluation of this index yet.' }))]);
    }

    async function load() {
      const ix = current();
      const [o, found] = await Promise.all([api('GET', '/overview'), api('GET', `/vector_indexes/${enc(ix.identifier)}/evaluations`)]);
      indexes = o.indexes.length ? o.indexes : indexes;
      evaluations = found.evaluations || [];
      drawVersions();
      drawTable();
      drawPlot();
    }

    form.index.addEventListener('change', () => {
      window.history.replaceState(null, '', `?${new URLSearchParams({ index: form.index.value })}`);
      $('#evaluate-result').textContent = '';
      load().then(() => showError(null), showError);
    });
    form.metric.addEventListener('change', drawPlot);
    form.set.addEventListener('change', drawVersions);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const ix = current();
      const k = Math.max(1, Math.min(1000, Number(form.k.value) || 10));
      button.disabled = true;
      document.body.dataset.evaluating = 'true';
      $('#evaluate-result').textContent = `evaluating ${ix.identifier} on ${form.set.value} (k=${k})…`;
      try {
        const result = await api('POST', `/vector_indexes/${enc(ix.identifier)}/evaluate`, { evaluation_set: form.set.value, k });
        await load();
        $('#evaluate-result').textContent = `version ${result.version}: ndcg@${k} ${shownMetric('ndcg', metricOf(result, 'ndcg'))}, recall@${k} ${shownMetric('recall', metricOf(result, 'recall'))}`;
        showError(null);
      } catch (err) {
        $('#evaluate-result').textContent = '';
        showError(err);
      } finally {
        button.disabled = ROLE === 'read';
        delete document.body.dataset.evaluating;
      }
    });
    await load();
    if (evaluations.length) form.k.value = evaluations[evaluations.length - 1].k; // as measured last
    // a staged build's progress, while one is building
    setInterval(() => {
      const ix = current();
      if (document.body.dataset.evaluating || !(ix.staged || []).some((s) => s.state === 'building')) return;
      load().catch(showError);
    }, 3000);
  };

  document.addEventListener('DOMContentLoaded', () => {
    const page = pages[document.body.dataset.page];
    // data-loaded-ms: from the start of the navigation until the page is filled
    const done = () => {
      document.body.dataset.loadedMs = performance.now().toFixed(0);
      document.body.dataset.loaded = 'true';
    };
    if (page) page().then(done, showError);
  });
})();

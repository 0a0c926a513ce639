/*
 * The replay page. Plain script, no modules: Chromium refuses ES-module imports from file:// pages.
 * Everything it shows comes from window.VIZ_DATA (written by build.ts); trace text only ever goes
 * into the page through textContent, never into Mermaid or innerHTML, since servers wrote some of it.
 */
'use strict';
(function () {
  var data = window.VIZ_DATA;
  var body = document.body;
  var $ = function (id) { return document.getElementById(id); };
  var diagram = $('diagram');
  var status = $('status');

  function fail(message) {
    status.textContent = message;
    status.className = 'error';
    body.dataset.error = message;
    body.dataset.ready = 'true';
  }

  if (!data || !data.machine) return fail('No data: open the index.html that `npm run visualize` wrote (it loads data/flow.data.js).');
  if (typeof window.mermaid === 'undefined') return fail('Mermaid did not load: vendor/mermaid.min.js is missing next to this page.');

  var machine = data.machine;
  var frames = data.frames || [];
  var statesById = {};
  Object.keys(machine.states).forEach(function (path) { statesById[machine.states[path].id] = machine.states[path]; });

  // Two ways to show a frame: render the diagram once and apply each frame's class lines to the
  // drawn nodes (instant), or render the diagram text plus the class lines per frame (about 2-4 s a
  // render for this machine). The second is the fallback when a node cannot be found in the SVG,
  // and can be forced with #rerender.
  var mode = location.hash === '#rerender' ? 'rerender' : 'classes';
  var nodes = null;
  var svgCache = {};
  var renderCount = 0;
  var current = -1;
  var chain = Promise.resolve();

  window.mermaid.initialize({
    startOnLoad: false,
    securityLevel: 'strict',
    theme: 'default',
    state: { useMaxWidth: false },
  });

  function withClasses(lines) {
    return machine.mermaid + lines.map(function (line) { return '  ' + line + '\n'; }).join('');
  }

  function render(text) {
    if (svgCache[text]) return Promise.resolve(svgCache[text]);
    renderCount += 1;
    return window.mermaid.render('statechart-' + renderCount, text).then(function (result) {
      svgCache[text] = result.svg;
      return result.svg;
    });
  }

  function install(svg) {
    diagram.querySelectorAll('svg').forEach(function (old) { old.remove(); });
    diagram.insertAdjacentHTML('beforeend', svg);
    status.textContent = '';
    nodes = indexNodes(diagram.querySelector('svg'));
    applyZoom();
  }

  /** Mermaid id → drawn elements: clusters carry data-id, leaves an id ending in -state-<id>-<n>. */
  function indexNodes(svg) {
    var map = {};
    svg.querySelectorAll('g[id], g[data-id]').forEach(function (g) {
      var id = g.getAttribute('data-id');
      if (!id || !statesById[id]) {
        var match = /-state-(.+)-\d+$/.exec(g.id || '');
        id = match ? match[1] : null;
      }
      if (id && statesById[id]) (map[id] = map[id] || []).push(g);
    });
    return map;
  }

  function missingNodes() {
    return Object.keys(statesById).filter(function (id) { return id !== machine.rootId && !(nodes && nodes[id]); });
  }

  function applyClasses(lines) {
    var svg = diagram.querySelector('svg');
    svg.querySelectorAll('.active, .activeAncestor').forEach(function (el) { el.classList.remove('active', 'activeAncestor'); });
    lines.forEach(function (line) {
      var match = /^class (\S+) (\S+)$/.exec(line);
      if (!match) return;
      match[1].split(',').forEach(function (id) {
        (nodes[id] || []).forEach(function (el) { el.classList.add(match[2]); });
      });
    });
  }

  function scrollToActive() {
    var active = diagram.querySelector('svg .active');
    if (!active) return;
    var box = active.getBoundingClientRect();
    var pane = diagram.getBoundingClientRect();
    diagram.scrollLeft += box.left + box.width / 2 - (pane.left + pane.width / 2);
    diagram.scrollTop += box.top + box.height / 2 - (pane.top + pane.height / 2);
  }

  // ------------------------------------------------------------------ the panel

  function setList(dl, rows) {
    dl.textContent = '';
    rows.forEach(function (row) {
      if (row[1] === undefined || row[1] === null || row[1] === '') return;
      var dt = document.createElement('dt');
      dt.textContent = row[0];
      var dd = document.createElement('dd');
      dd.textContent = String(row[1]);
      dl.appendChild(dt);
      dl.appendChild(dd);
    });
    if (!dl.firstChild) {
      var none = document.createElement('dt');
      none.className = 'muted';
      none.textContent = 'none';
      dl.appendChild(none);
      dl.appendChild(document.createElement('dd'));
    }
  }

  /** Bodies are recorded as JSON text; parsed for reading, the same data either way. */
  function readable(value) {
    if (!value) return '–';
    var copy = Object.assign({}, value);
    if (typeof copy.body === 'string') {
      try { copy.body = JSON.parse(copy.body); } catch (e) { /* form or redacted text: shown as recorded */ }
    }
    return JSON.stringify(copy, null, 2);
  }

  function transitionsOf(path) {
    var items = [];
    var segments = path ? path.split('.') : [];
    for (var i = segments.length; i >= 0; i--) {
      var owner = segments.slice(0, i).join('.');
      var state = machine.states[owner];
      if (!state) continue;
      state.transitions.forEach(function (t) {
        items.push(t.label + ' → ' + t.target + (owner === path ? '' : '   (from ' + (owner || machine.machineId) + ')'));
      });
    }
    return items;
  }

  function showPanel(frame) {
    $('counter').textContent = 'Step ' + (frame.index + 1) + ' / ' + frames.length;
    $('step-title').textContent = frame.title;
    $('step-title').className = '';
    setList($('step-meta'), [
      ['kind', frame.kind],
      ['seq', frame.seq],
      ['time', '+' + frame.offsetMs + ' ms  (' + new Date(frame.at).toISOString() + ')'],
    ]);
    $('state-path').textContent = frame.state;
    var state = machine.states[frame.state];
    setList($('state-meta'), [
      ['from', frame.previousState === frame.state ? frame.state + ' (unchanged)' : frame.previousState],
      ['tags', state ? state.tags.join(', ') : ''],
      ['entry', state ? state.entry.join(', ') : ''],
      ['warning', frame.stateKnown ? '' : 'this state is not in the machine (a trace from another version?)'],
    ]);
    var list = $('state-transitions');
    list.textContent = '';
    transitionsOf(frame.state).forEach(function (text) {
      var li = document.createElement('li');
      li.textContent = text;
      list.appendChild(li);
    });
    var http = frame.http || {};
    setList($('http'), [
      ['step', http.step],
      ['method', http.method],
      ['url', http.url],
      ['request', http.requestId],
      ['status', http.status],
      ['note', http.note],
    ]);
    var event = frame.event;
    $('event').textContent = event ? (event.seq === frame.seq ? '' : '(seq ' + event.seq + ', the event before this effect)\n') + readable(event.value) : '–';
    $('effect').textContent = frame.effect ? readable(frame.effect) : '–';
    var timeline = $('timeline');
    var previous = timeline.querySelector('.current');
    if (previous) previous.classList.remove('current');
    var item = timeline.children[frame.index];
    if (item) {
      item.classList.add('current');
      // Scrolling only the list: scrollIntoView would also scroll the panel away from its top.
      if (item.offsetTop < timeline.scrollTop || item.offsetTop + item.offsetHeight > timeline.scrollTop + timeline.clientHeight) {
        timeline.scrollTop = item.offsetTop - timeline.clientHeight / 2;
      }
    }
    $('first').disabled = $('prev').disabled = frame.index === 0;
    $('next').disabled = $('last').disabled = frame.index === frames.length - 1;
  }

  function buildTimeline() {
    var timeline = $('timeline');
    frames.forEach(function (frame) {
      var li = document.createElement('li');
      var kind = document.createElement('span');
      kind.className = 'kind';
      kind.textContent = (frame.kind === 'event' ? '← ' : '→ ');
      li.appendChild(kind);
      li.appendChild(document.createTextNode(frame.title + '  ·  ' + frame.state));
      li.addEventListener('click', function () { go(frame.index); });
      timeline.appendChild(li);
    });
  }

  // ------------------------------------------------------------------ stepping

  function go(index) {
    if (frames.length === 0) return;
    index = Math.max(0, Math.min(frames.length - 1, index));
    current = index;
    var frame = frames[index];
    showPanel(frame);
    chain = chain.then(function () {
      if (current !== index) return;
      var drawn = mode === 'classes'
        ? Promise.resolve(applyClasses(frame.classLines))
        : render(withClasses(frame.classLines)).then(function (svg) { if (current === index) install(svg); });
      return drawn.then(function () {
        if (current !== index) return;
        scrollToActive();
        body.dataset.frame = String(index);
        body.dataset.state = frame.state;
      });
    }).catch(function (error) { fail('Rendering failed: ' + (error && error.message ? error.message : String(error))); });
  }

  document.addEventListener('keydown', function (event) {
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    var zooms = { '+': 1, '=': 1, '-': -1 };
    if (event.key in zooms) { stepZoom(zooms[event.key]); return; }
    if (event.key === '0') { fit = true; applyZoom(); return; }
    var moves = { ArrowRight: current + 1, ArrowLeft: current - 1, Home: 0, End: frames.length - 1 };
    if (!(event.key in moves) || frames.length === 0) return;
    event.preventDefault();
    go(moves[event.key]);
  });
  $('next').addEventListener('click', function () { go(current + 1); });
  $('prev').addEventListener('click', function () { go(current - 1); });
  $('first').addEventListener('click', function () { go(0); });
  $('last').addEventListener('click', function () { go(frames.length - 1); });

  // ------------------------------------------------------------------ zoom

  var ZOOMS = [0.25, 0.4, 0.55, 0.7, 0.85, 1, 1.25, 1.5];
  var zoom = 1;
  var fit = false;

  function naturalSize() {
    var svg = diagram.querySelector('svg');
    if (!svg) return null;
    var box = (svg.getAttribute('viewBox') || '').split(/[\s,]+/).map(Number);
    if (box[2] > 0 && box[3] > 0) return { width: box[2], height: box[3] };
    var bbox = svg.getBBox();
    return { width: bbox.width || 1, height: bbox.height || 1 };
  }

  function currentScale() {
    var size = naturalSize();
    return fit && size ? Math.min(1.5, (diagram.clientWidth - 4) / size.width) : zoom;
  }

  function applyZoom() {
    var svg = diagram.querySelector('svg');
    var size = naturalSize();
    if (!svg || !size) return;
    var scale = currentScale();
    svg.style.width = Math.round(size.width * scale) + 'px';
    svg.style.height = Math.round(size.height * scale) + 'px';
    $('zoom-level').textContent = fit ? 'fit' : Math.round(scale * 100) + '%';
    scrollToActive();
  }

  function stepZoom(direction) {
    var from = currentScale();
    var next = direction > 0
      ? ZOOMS.filter(function (z) { return z > from + 0.001; })[0]
      : ZOOMS.filter(function (z) { return z < from - 0.001; }).pop();
    if (next === undefined) return;
    fit = false;
    zoom = next;
    applyZoom();
  }

  $('zoom-in').addEventListener('click', function () { stepZoom(1); });
  $('zoom-out').addEventListener('click', function () { stepZoom(-1); });
  $('zoom-fit').addEventListener('click', function () { fit = true; applyZoom(); });
  window.addEventListener('resize', function () { if (fit) applyZoom(); });

  // ------------------------------------------------------------------ start

  var trace = data.trace;
  $('source').textContent = trace
    ? trace.source + ' · ' + trace.entries + ' steps · ' + trace.serverUrl
    : 'statechart only (no trace)';
  if (data.unknownStates && data.unknownStates.length) {
    $('source').textContent += ' · states not in the machine: ' + data.unknownStates.join(', ');
  }
  buildTimeline();
  if (frames.length === 0) {
    ['first', 'prev', 'next', 'last'].forEach(function (id) { $(id).disabled = true; });
    $('counter').textContent = 'no trace';
  }

  var first = mode === 'classes' || frames.length === 0 ? machine.mermaid : withClasses(frames[0].classLines);
  render(first).then(function (svg) {
    install(svg);
    var missing = missingNodes();
    if (mode === 'classes' && missing.length > 0) {
      console.warn('visualizer: drawn nodes not found for ' + missing.join(', ') + '; rendering each frame instead');
      mode = 'rerender';
    }
    body.dataset.renderMode = mode;
    body.dataset.ready = 'true';
    if (frames.length > 0) go(0);
  }).catch(function (error) {
    fail('Mermaid could not render the statechart: ' + (error && error.message ? error.message : String(error)));
  });
})();

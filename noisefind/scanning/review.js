(function () {
  const byClass = document.getElementById('class-filter');
  const byFlag = document.getElementById('flag-filter');
  const shown = document.getElementById('shown');
  const items = Array.from(document.querySelectorAll('.suspect'));
  function apply() {
    let count = 0;
    for (const item of items) {
      const flagged = item.dataset.suspected === 'true';
      const ok = (!byClass.value || item.dataset.label === byClass.value) &&
        (byFlag.value === 'all' || (byFlag.value === 'flagged') === flagged);
      item.hidden = !ok;
      if (ok) count += 1;
    }
    shown.textContent = count + ' of ' + items.length + ' shown';
  }
  // report.html?show=flagged&class=3 opens with those filters, e.g. to share a view; a value
  // the menu does not offer is ignored (setting it would blank the menu and misfilter).
  const params = new URLSearchParams(window.location.search);
  function pick(select, name) {
    const value = params.get(name);
    if (Array.from(select.options).some(function (o) { return o.value === value; })) {
      select.value = value;
    }
  }
  pick(byClass, 'class');
  pick(byFlag, 'show');
  byClass.addEventListener('change', apply);
  byFlag.addEventListener('change', apply);
  apply();

  // Decisions: keep, relabel or drop each example by key; kept in this browser
  // (localStorage, per page) and saved as decisions.csv for `noisefind export --decisions`.
  const store = 'noisefind-decisions:' + document.body.dataset.page;
  const classes = JSON.parse(document.getElementById('class-names').textContent);
  const save = document.getElementById('save');
  const decided = document.getElementById('decided');
  let decisions = {};
  try { decisions = JSON.parse(localStorage.getItem(store) || '{}'); } catch (e) { decisions = {}; }
  let current = null;
  function csv() {
    const rows = Object.keys(decisions).map(Number).sort(function (a, b) { return a - b; });
    return 'index,decision,label\n' + rows.map(function (i) {
      const d = decisions[i];
      return i + ',' + d.decision + ',' + (d.label.includes(',') || d.label.includes('"')
        ? '"' + d.label.replace(/"/g, '""') + '"' : d.label);
    }).join('\n') + (rows.length ? '\n' : '');
  }
  window.noisefindDecisions = csv;
  function mark(item) {
    const d = decisions[item.dataset.index];
    item.classList.remove('keep', 'relabel', 'drop');
    const text = item.querySelector('.decision');
    if (d) item.classList.add(d.decision);
    text.textContent = !d ? '' : d.decision === 'relabel' ? 'relabel to ' + d.label : d.decision;
  }
  function tally() {
    const counts = {keep: 0, relabel: 0, drop: 0};
    for (const key in decisions) counts[decisions[key].decision] += 1;
    decided.textContent = 'decided: ' + counts.keep + ' keep, ' + counts.relabel + ' relabel, ' +
      counts.drop + ' drop';
    save.href = 'data:text/csv;charset=utf-8,' + encodeURIComponent(csv());
  }
  function decide(item, decision, label) {
    if (decision === null) delete decisions[item.dataset.index];
    else decisions[item.dataset.index] = {decision: decision, label: label || ''};
    localStorage.setItem(store, JSON.stringify(decisions));
    mark(item);
    tally();
  }
  function focus(item) {
    if (current) current.classList.remove('current');
    current = item;
    if (item) {
      item.classList.add('current');
      item.scrollIntoView({block: 'nearest'});
    }
  }
  function step(by) {
    const list = items.filter(function (i) { return !i.hidden; });
    if (!list.length) return focus(null);
    const at = list.indexOf(current);
    focus(list[at < 0 ? 0 : Math.min(list.length - 1, Math.max(0, at + by))]);
  }
  document.addEventListener('keydown', function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.target.tagName === 'SELECT') {
      return;
    }
    const key = event.key;
    if (key === 'j' || key === 'ArrowDown' || key === 'ArrowRight') return step(1);
    if (key === 'k' || key === 'ArrowUp' || key === 'ArrowLeft') return step(-1);
    if (!current || current.hidden) return;
    const given = current.dataset.label;
    if (key === 'a' && current.dataset.suggested) {
      decide(current, 'relabel', current.dataset.suggested);
    } else if (key === 'c') {
      decide(current, 'keep');
    } else if (key === 'x') {
      decide(current, 'drop');
    } else if (key === 'u') {
      decide(current, null);
      return;
    } else if (/^[0-9]$/.test(key) && Number(key) < classes.length) {
      const label = classes[Number(key)];
      decide(current, label === given ? 'keep' : 'relabel', label === given ? '' : label);
    } else {
      return;
    }
    step(1);  // on to the next example
  });
  byClass.addEventListener('change', function () { step(0); });
  byFlag.addEventListener('change', function () { step(0); });
  items.forEach(mark);
  tally();
  step(0);
})();

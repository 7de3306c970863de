// The queue dashboard, live: the server renders everything; this script only
//  - filters rows by user as you type (rows carry data-user),
//  - listens to /api/v1/events (Server-Sent Events) and, on each new snapshot, fetches the
//    server-rendered (and server-escaped) fragment and swaps it in.
// Data from the snapshot is only ever put in the page as text (textContent).
(function () {
  'use strict';
  var main = document.getElementById('dashboard');
  var input = document.getElementById('user-filter');
  var live = document.getElementById('live');
  if (!main || !input) { return; }

  function query() { return input.value.trim().toLowerCase(); }

  // filter hides the rows and bars whose users do not contain the query, and the capacity cut
  // and CPU-only header when no job of theirs is left.
  function filter() {
    var q = query();
    var shown = { gpu: 0, cpu: 0 };
    var rows = main.querySelectorAll('[data-user]');
    for (var i = 0; i < rows.length; i++) {
      var users = rows[i].getAttribute('data-user').toLowerCase().split(' ');
      var ok = q === '' || users.some(function (u) { return u.indexOf(q) >= 0; });
      rows[i].hidden = !ok;
      if (ok && rows[i].classList.contains('gpu')) { shown.gpu++; }
      if (ok && rows[i].classList.contains('cpu')) { shown.cpu++; }
    }
    toggle('capacity-cut', shown.gpu > 0);
    toggle('cpu-jobs', shown.cpu > 0);
    var none = toggle('no-match', shown.gpu + shown.cpu === 0);
    if (none) {
      none.firstElementChild.textContent = q === '' ? 'No active jobs.' : 'No active jobs for users matching \u201c' + input.value.trim() + '\u201d.';
    }
  }

  function toggle(id, show) {
    var el = document.getElementById(id);
    if (el) { el.hidden = !show; }
    return el;
  }

  var loading = false, again = false;
  // refresh swaps in the fragment the server renders for the current filter.
  function refresh() {
    if (loading) { again = true; return; }
    loading = true;
    fetch('fragment?user=' + encodeURIComponent(input.value.trim()), { cache: 'no-store', headers: { Accept: 'text/html' } })
      .then(function (r) {
        if (!r.ok && r.status !== 503) { throw new Error('HTTP ' + r.status); }
        return r.text();
      })
      .then(function (html) { main.innerHTML = html; filter(); }) // server-rendered, escaped HTML
      .catch(function () { setLive(false); })
      .then(function () {
        loading = false;
        if (again) { again = false; refresh(); }
      });
  }

  function setLive(on) {
    if (!live) { return; }
    live.hidden = false;
    live.className = 'live ' + (on ? 'on' : 'off');
    live.textContent = on ? 'live' : 'reconnecting\u2026';
  }

  var typing;
  input.addEventListener('input', function () {
    filter();
    var q = input.value.trim();
    history.replaceState(null, '', q ? '?user=' + encodeURIComponent(q) : location.pathname);
    clearTimeout(typing);
    typing = setTimeout(refresh, 400);
  });
  input.form.addEventListener('submit', function (e) { e.preventDefault(); filter(); refresh(); });

  if (window.EventSource) {
    var es = new EventSource('api/v1/events');
    es.addEventListener('snapshot', function (e) {
      var shown = document.getElementById('snapshot');
      if (shown && shown.getAttribute('data-id') === e.lastEventId) { return; } // already on the page
      refresh();
    });
    es.onopen = function () { setLive(true); };
    es.onerror = function () { setLive(false); };
  }
  // Keep "waiting for 12m" fresh when the queue is quiet.
  setInterval(refresh, 60000);
  filter();
})();

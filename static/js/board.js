/* The live board: requests pushed over server-sent events and drawn as they happen.
 *
 * `requests` events: each request flies from the request node through the endpoint into the
 * lane that served it; a failed attempt turns red on its lane and the flight goes on to the next.
 * `lanes` events: a lane's live part (state, members, figures) when it changed on the server.
 * When the stream drops (or the server has no feed: 503) the board polls the same lanes
 * payload and the latest-requests fragment every POLL_MS until the stream is back.
 * A goal name's board (data-lane-by="instance") has a lane per model: an attempt is drawn in
 * the lane whose data-instances lists its instance, and its table shows the model, not the route.
 */
(function () {
  "use strict";
  var board = document.getElementById("board");
  if (!board) return;
  var picture = document.getElementById("picture");
  var flyers = picture.querySelector(".flyers");
  var status = document.querySelector("[data-testid=feed-status]");
  var events = document.getElementById("board-events");
  var POLL_MS = 3000, RETRY_FIRST_MS = 1000, RETRY_MAX_MS = 30000, CHIPS_PER_LANE = 14, ROWS = 15, HOP_MS = 110;
  var source = null, pollTimer = null, retryTimer = null, retryMs = RETRY_FIRST_MS;
  var byInstance = board.dataset.laneBy === "instance";

  function laneOf(route) {
    return route ? board.querySelector('.lane[data-route="' + CSS.escape(route) + '"]') : null;
  }

  // The lane an attempt is drawn in: its route's, or on a goal board its instance's model's.
  function laneFor(a) {
    if (!a) return null;
    if (!byInstance) return laneOf(a.route);
    return a.instance ? board.querySelector('.lane[data-instances~="' + CSS.escape(a.instance) + '"]') : null;
  }

  function laneName(a) {
    var lane = laneFor(a);
    return lane ? lane.dataset.route : (a ? (byInstance ? a.instance : a.route) : undefined);
  }

  function setStatus(text, live) {
    status.textContent = text;
    status.classList.toggle("live", !!live);
  }

  function centre(el, box) {
    var r = el.getBoundingClientRect();
    return { x: r.left - box.left + r.width / 2 - 6, y: r.top - box.top + r.height / 2 - 6 };
  }

  function chip(lane, e, attempt, failed, next) {
    var feed = lane.querySelector(".lane-feed");
    var c = document.createElement("span");
    c.className = "req new " + (failed ? "failed" : (e.status < 400 ? "ok" : "bad"));
    c.dataset.requestId = e.id;
    c.dataset.testid = "req";
    c.setAttribute("data-testid", "req");
    c.title = (failed ? "failed on " : "") + attempt.instance + " · " + (attempt.outcome || "") +
      (attempt.status ? " " + attempt.status : "") + (next ? " → " + next : "") + " · " + e.decision;
    if (failed && next) {
      c.classList.add("failover");
      var label = document.createElement("span");
      label.className = "failover-label";
      label.setAttribute("data-testid", "failover");
      label.textContent = "↓ " + next;
      c.appendChild(label);
    }
    feed.prepend(c);
    while (feed.children.length > CHIPS_PER_LANE) feed.lastElementChild.remove();
  }

  function fly(points, failedAt, done) {
    var dot = document.createElement("span");
    dot.className = "flyer";
    flyers.appendChild(dot);
    var frames = points.map(function (p, i) {
      return { transform: "translate(" + p.x + "px," + p.y + "px)", offset: points.length > 1 ? i / (points.length - 1) : 0 };
    });
    if (!dot.animate || points.length < 2) { dot.remove(); done(); return; }
    var anim = dot.animate(frames, { duration: HOP_MS * (points.length - 1), easing: "ease-in-out" });
    if (failedAt !== null) setTimeout(function () { dot.classList.add("failed"); }, HOP_MS * failedAt);
    anim.onfinish = function () { dot.remove(); done(); };
  }

  function draw(e) {
    var last = picture.querySelector("[data-testid=last-request]");
    last.textContent = e.id.slice(0, 12) + " · " + e.decision;
    // A kept prompt's start (balancers keeping prompts only): as text, so markup in it is shown, never run.
    var prompt = picture.querySelector("[data-testid=last-prompt]");
    if (prompt) prompt.textContent = e.prompt || "";
    var box = picture.getBoundingClientRect();
    var points = [centre(picture.querySelector(".request-node"), box), centre(picture.querySelector(".endpoint-node"), box)];
    var hops = [];
    var failedAt = null;
    e.attempts.forEach(function (a, i) {
      var lane = laneFor(a);
      if (!lane) return;
      points.push(centre(lane.querySelector(".lane-feed"), box));
      var failed = a.outcome !== "ok";
      if (failed && failedAt === null && i < e.attempts.length - 1) failedAt = points.length - 1;
      hops.push({ lane: lane, attempt: a, failed: failed, next: laneName(e.attempts[i + 1]) });
    });
    var landed = false;
    function land() {
      if (landed) return;
      landed = true;
      hops.forEach(function (h) { chip(h.lane, e, h.attempt, h.failed, h.next); });
    }
    // Land the chips even if the tab is hidden (animations may not finish): the board stays true.
    setTimeout(land, HOP_MS * points.length + 100);
    if (document.visibilityState === "visible") fly(points, failedAt, land); else land();
    row(e);
  }

  function cell(tr, text, cls, label) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    if (label) td.dataset.label = label;
    if (text !== null) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  // "Wrong route?" on a router decision (operators): the form loads from the server when opened.
  function correctionControl(id) {
    var url = board.dataset.correctionUrl + "?request=" + encodeURIComponent(id) + "&source=board";
    var d = document.createElement("details");
    d.className = "more correction-control";
    d.setAttribute("data-testid", "correction-control");
    d.setAttribute("hx-get", url);
    d.setAttribute("hx-trigger", "toggle once");
    d.setAttribute("hx-target", "find .correction-body");
    var s = document.createElement("summary");
    s.className = "small";
    s.textContent = "Wrong route?";
    d.appendChild(s);
    var body = document.createElement("div");
    body.className = "correction-body";
    var a = document.createElement("a");
    a.className = "small";
    a.href = url;
    a.textContent = "Correct this decision";
    body.appendChild(a);
    d.appendChild(body);
    if (window.htmx) window.htmx.process(d);
    return d;
  }

  function row(e) {
    var empty = events.querySelector("tr.no-events");
    if (empty) empty.remove();
    var tr = document.createElement("tr");
    tr.dataset.requestId = e.id;
    var when = document.createElement("span");
    when.className = "nowrap";
    when.dataset.at = String(e.at);
    when.dataset.testid = "when";
    when.textContent = ago(e.at);
    cell(tr, null, "primary-cell").appendChild(when);
    if (byInstance) cell(tr, e.model || "—", "mono", "Model"); else cell(tr, e.route || "—", null, "Route");
    cell(tr, e.instance || "—", "mono", "Instance");
    var st = cell(tr, null, null, "Status");
    var pill = document.createElement("span");
    pill.className = "pill " + (e.status < 400 ? "ok" : "bad");
    pill.textContent = String(e.status);
    st.appendChild(pill);
    if (e.attempts.length > 1) {
      var d = document.createElement("details");
      d.className = "more attempt-log";
      d.dataset.requestId = e.id;
      var s = document.createElement("summary");
      s.textContent = e.attempts.length + " attempts";
      d.appendChild(s);
      var ol = document.createElement("ol");
      ol.className = "attempts";
      // The same markup as includes/attempt_log.html, which draws the polled and first-loaded rows.
      e.attempts.forEach(function (a) {
        var li = document.createElement("li");
        var pill = document.createElement("span");
        pill.className = "pill " + (a.outcome === "ok" ? "ok" : (a.outcome === "client_error" ? "warn" : "bad"));
        pill.textContent = (a.outcome || "") + (a.status ? " " + a.status : "");
        var where = document.createElement("span");
        where.textContent = (a.route || "") + " → ";
        var inst = document.createElement("span");
        inst.className = "mono";
        inst.textContent = a.instance || "";
        where.appendChild(inst);
        li.appendChild(pill);
        li.appendChild(document.createTextNode(" "));
        li.appendChild(where);
        if (a.ms !== null && a.ms !== undefined) {
          var ms = document.createElement("span");
          ms.className = "muted";
          ms.textContent = Math.round(a.ms) + " ms";
          li.appendChild(document.createTextNode(" "));
          li.appendChild(ms);
        }
        ol.appendChild(li);
      });
      d.appendChild(ol);
      st.appendChild(document.createTextNode(" "));
      st.appendChild(d);
    }
    var dec = cell(tr, e.decision, "small", "Decision");
    dec.setAttribute("data-testid", "decision");
    if (board.dataset.correctionUrl && (e.reason === "classified" || String(e.reason).indexOf("default:") === 0)) {
      dec.appendChild(correctionControl(e.id));
    }
    cell(tr, e.ms + " ms", "right nowrap", "Latency");
    events.prepend(tr);
    while (events.children.length > ROWS) events.lastElementChild.remove();
  }

  // "When" in the table: how long ago, kept current (a pushed row is never redrawn).
  function ago(at) {
    var s = Math.max(0, Math.round(Date.now() / 1000 - at));
    if (s < 5) return "now";
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    return Math.floor(s / 3600) + " h ago";
  }

  function tick() {
    events.querySelectorAll("[data-at]").forEach(function (el) { el.textContent = ago(Number(el.dataset.at)); });
  }

  function applyLanes(payload) {
    var shown = Array.prototype.map.call(board.querySelectorAll(".lane[data-route]"), function (l) { return l.dataset.route; });
    if (shown.join("\n") !== payload.routes.join("\n")) { window.location.reload(); return; }
    payload.routes.forEach(function (name) {
      var lane = laneOf(name), data = payload.lanes[name];
      lane.dataset.state = data.state;
      if (data.instances !== undefined) lane.dataset.instances = data.instances;
      lane.dataset.available = String(data.state === "active" || data.state === "degraded");
      var live = lane.querySelector(".lane-live");
      if (live.dataset.html !== data.html) { live.innerHTML = data.html; live.dataset.html = data.html; }
    });
    [["board-summary", payload.summary], ["board-probes", payload.probes]].forEach(function (pair) {
      var el = document.getElementById(pair[0]);
      if (el && pair[1] !== undefined && el.dataset.html !== pair[1]) { el.innerHTML = pair[1]; el.dataset.html = pair[1]; }
    });
  }

  function poll() {
    fetch(board.dataset.lanesUrl, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) { if (p) applyLanes(p); })
      .catch(function () {});
    fetch(board.dataset.eventsFragmentUrl, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        // An operator filling in a correction keeps the rows as they are until it is closed.
        if (events.querySelector("details.correction-control[open]")) return;
        var open = Array.prototype.map.call(events.querySelectorAll("tr[data-request-id] details.attempt-log[open]"),
          function (d) { return d.closest("tr").dataset.requestId; });
        var holder = document.createElement("table");
        holder.innerHTML = html;
        var fresh = holder.querySelector("tbody");
        if (!fresh) return;
        open.forEach(function (id) {
          var d = fresh.querySelector('tr[data-request-id="' + CSS.escape(id) + '"] details.attempt-log');
          if (d) d.open = true;
        });
        events.replaceWith(fresh);
        events = fresh;
        if (window.htmx) window.htmx.process(fresh);
        tick();
      })
      .catch(function () {});
  }

  function startPolling(why) {
    setStatus(why + " Polling every " + POLL_MS / 1000 + " s.", false);
    if (!pollTimer) { poll(); pollTimer = setInterval(function () { if (document.visibilityState === "visible") poll(); }, POLL_MS); }
  }

  function stopPolling() {
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  function connect() {
    if (!window.EventSource) { startPolling("This browser has no live feed."); return; }
    source = new EventSource(board.dataset.eventsUrl);
    source.onopen = function () { retryMs = RETRY_FIRST_MS; stopPolling(); setStatus("Live.", true); };
    source.addEventListener("requests", function (m) {
      var batch = JSON.parse(m.data);
      batch.events.forEach(draw);
    });
    source.addEventListener("lanes", function (m) { applyLanes(JSON.parse(m.data)); });
    source.onerror = function () {
      startPolling("Live feed interrupted.");
      if (source.readyState === EventSource.CLOSED && !retryTimer) {
        // Refused (a 503 while Redis is unreachable, a worker restarting): try again soon, then
        // back off to RETRY_MAX_MS so that many boards do not hammer a server that is down.
        retryTimer = setTimeout(function () { retryTimer = null; connect(); }, retryMs);
        retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
      }
    };
  }
  window.addEventListener("pagehide", function () { if (source) source.close(); });
  tick();
  setInterval(tick, 5000);
  connect();
})();

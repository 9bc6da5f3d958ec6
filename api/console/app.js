// The operators' console: a client of /api/ops/ with no framework and no build step.
// The token lives in this tab's sessionStorage and travels only in the Authorization
// header. Every value from the API reaches the page through textContent, never as HTML.

import { lineChart } from '/ops/charts.js';

const TOKEN_KEY = 'commcenter.ops.token';
const SETTLED = ['succeeded', 'dead', 'cancelled'];
const ELIGIBLE = {
  replay: ['dead', 'cancelled', 'retrying'],
  discard: ['pending', 'queued', 'retrying', 'dead'],
};
const HEALTH_EVERY_MS = 15000;
const POLL_MS = 500;

const $ = (selector) => document.querySelector(selector);

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API with the operator's token; throws ApiError with the API's message. */
async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(0, `cannot reach the API: ${e.message}`);
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data?.error?.message ?? `the API answered ${response.status}`;
    throw new ApiError(response.status, `${message} (HTTP ${response.status})`);
  }
  return data;
}

// ---- errors -------------------------------------------------------------------------

function showError(error) {
  $('#error-text').textContent = error.message ?? String(error);
  $('#error').hidden = false;
  if (error.status === 401) signOut('Your token was refused (expired or wrong): sign in again.');
}

function clearError() {
  $('#error').hidden = true;
  $('#error-text').textContent = '';
}

/** Runs an async UI action, showing its failure instead of losing it. */
function guarded(action) {
  return async (...args) => {
    try {
      await action(...args);
    } catch (e) {
      showError(e);
    }
  };
}

// ---- small DOM builders -------------------------------------------------------------

function text(value) {
  return value === null || value === undefined || value === '' ? '-' : String(value);
}

function time(value) {
  if (!value) return '-';
  return new Date(value).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function cell(row, value, className) {
  const td = row.insertCell();
  td.textContent = text(value);
  if (className) td.className = className;
  return td;
}

function fillFields(dl, object, names) {
  dl.replaceChildren();
  for (const name of names) {
    const dt = document.createElement('dt');
    dt.textContent = name.replaceAll('_', ' ');
    const dd = document.createElement('dd');
    const value = object[name];
    dd.textContent = name.endsWith('_at') ? time(value) : text(value);
    dd.dataset.field = name;
    dl.append(dt, dd);
  }
}

function truncate(value, width) {
  const line = text(value).replace(/\s+/g, ' ');
  return line.length > width ? `${line.slice(0, width - 1)}…` : line;
}

// ---- sign in and out ----------------------------------------------------------------

function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#login').hidden = true;
  $('#workspace').hidden = false;
  $('#sign-out').hidden = false;
  clearError();
  startHealth();
  loadJobs();
}

function signOut(note) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopHealth();
  $('#workspace').hidden = true;
  $('#sign-out').hidden = true;
  $('#login').hidden = false;
  $('#token').value = '';
  $('#who').textContent = note ?? '';
}

// ---- queue health -------------------------------------------------------------------

let healthTimer = null;

function startHealth() {
  stopHealth();
  refreshHealth();
  healthTimer = setInterval(refreshHealth, HEALTH_EVERY_MS);
}

function stopHealth() {
  if (healthTimer) clearInterval(healthTimer);
  healthTimer = null;
}

const refreshHealth = guarded(async () => {
  const health = await api('GET', '/api/ops/queues');
  const { ledger, broker } = health;

  const cards = Object.entries(ledger.by_state).map(([state, n]) => {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = `card state-${state}`;
    button.dataset.state = state;
    const count = document.createElement('span');
    count.className = 'n';
    count.textContent = n;
    button.append(count, ` ${state}`);
    button.addEventListener('click', () => {
      $('#filters').elements.state.value = state;
      loadJobs();
    });
    return button;
  });
  $('#states').replaceChildren(...cards);

  $('#outbox').textContent =
    `Outbox: ${ledger.outbox.pending} pending, oldest waiting ${ledger.outbox.lag_seconds.toFixed(1)} s`;
  const oldest = ledger.oldest_retrying;
  $('#oldest-retrying').hidden = !oldest;
  if (oldest) {
    $('#oldest-retrying').textContent =
      `Retrying longest: ${oldest.kind} ${oldest.id}, ${oldest.attempts} attempts since ` +
      `${time(oldest.first_failed_at)}: ${truncate(oldest.last_error, 120)}`;
  }

  const body = $('#queues tbody');
  body.replaceChildren();
  $('#broker-error').hidden = broker.reachable;
  if (!broker.reachable) {
    $('#broker-error').textContent = `RabbitMQ is unreachable: ${broker.error}`;
  } else {
    const { work, delay, dead } = broker.queues;
    for (const queue of [...work, ...delay, dead]) {
      const row = body.insertRow();
      cell(row, queue.exists ? queue.queue : `${queue.queue} (not declared)`);
      cell(row, queue.messages, 'num');
      cell(row, queue.consumers, 'num');
    }
  }
  await refreshActivity();
  $('#health-updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
});

// ---- the last hour, as pictures -----------------------------------------------------

/** Jobs per minute and queue depths over the last hour, as the workers recorded them. */
async function refreshActivity() {
  const activity = await api('GET', '/api/ops/activity?minutes=60');
  const labels = activity.minutes.map((m) => new Date(m.at).toISOString().slice(11, 16));
  lineChart($('#jobs-chart'), 'Jobs per minute', {
    labels,
    series: ['succeeded', 'retried', 'dead'].map((name) => ({
      name,
      values: activity.minutes.map((m) => m[name]),
    })),
  });
  // The deepest queues first: a chart of every queue would be unreadable.
  const deepest = activity.queues
    .map((q) => ({ ...q, peak: Math.max(0, ...q.depths.filter((d) => d !== null)) }))
    .sort((a, b) => b.peak - a.peak)
    .slice(0, 4);
  lineChart($('#depths-chart'), 'Queue depth (deepest in each minute)', {
    labels,
    series: deepest.map((q) => ({ name: q.queue.split('.').slice(1).join('.'), values: q.depths })),
  });
}

// ---- the job list -------------------------------------------------------------------

/** The filter form as API parameters (empty fields left out). */
function currentFilter() {
  const filter = {};
  for (const [name, value] of new FormData($('#filters'))) {
    if (value.trim() !== '') filter[name] = value.trim();
  }
  return filter;
}

let listing = { filter: {}, cursor: null };

const loadJobs = guarded(async (more = false) => {
  if (!more) listing = { filter: currentFilter(), cursor: null };
  const params = new URLSearchParams(listing.filter);
  params.set('limit', '50');
  if (more && listing.cursor) params.set('cursor', listing.cursor);
  const page = await api('GET', `/api/ops/jobs?${params}`);
  clearError();

  const body = $('#job-table tbody');
  if (!more) body.replaceChildren();
  for (const job of page.jobs) {
    const row = body.insertRow();
    row.dataset.jobId = job.id;
    cell(row, time(job.created_at));
    cell(row, job.kind);
    cell(row, job.state, `state state-${job.state}`);
    cell(row, `${job.attempts_since_replay}/${job.max_attempts}`, 'num');
    cell(row, job.customer_id);
    cell(row, job.last_error_class);
    const error = cell(row, truncate(job.last_error, 80));
    if (job.last_error) error.title = job.last_error;
    const open = document.createElement('button');
    open.type = 'button';
    open.textContent = 'Open';
    open.setAttribute('aria-label', `Open job ${job.id}`);
    open.addEventListener('click', () => openJob(job.id));
    row.insertCell().append(open);
  }
  listing.cursor = page.next_cursor;
  $('#load-more').hidden = !page.next_cursor;

  const { counts } = page;
  const shown = body.rows.length;
  const byState = Object.entries(counts.by_state).map(([s, n]) => `${s} ${n}`).join(', ');
  const byClass = Object.entries(counts.by_error_class).map(([c, n]) => `${c} ${n}`).join(', ');
  $('#counts').textContent = counts.total === 0
    ? 'No jobs match.'
    : `Showing ${shown} of ${counts.total} matching jobs. By state: ${byState || 'none'}.` +
      (byClass ? ` By error class: ${byClass}.` : '');
  const kinds = Object.keys(counts.by_kind).map((kind) => new Option(kind));
  if (kinds.length) $('#kinds').replaceChildren(...kinds);
});

// ---- one job ------------------------------------------------------------------------

let openId = null;
let detailTimer = null;

const openJob = guarded(async (id) => {
  openId = id;
  $('#action-note').textContent = '';
  await showJob(id);
  $('#detail').hidden = false;
  $('#detail').scrollIntoView({ block: 'start' });
  $('#detail-title').focus();
});

async function showJob(id) {
  const detail = await api('GET', `/api/ops/jobs/${encodeURIComponent(id)}`);
  if (id !== openId) return detail;
  const { job } = detail;
  $('#detail-id').textContent = job.id;
  fillFields($('#detail-job'), job, [
    'state', 'kind', 'customer_id', 'communication_id', 'attempts', 'attempts_since_replay',
    'max_attempts', 'generation', 'last_error_class', 'created_at', 'next_attempt_at',
    'first_failed_at', 'last_failed_at', 'finished_at', 'replayed_at', 'dead_lettered_by_broker',
  ]);
  $('#detail-job').dataset.state = job.state;
  $('#detail-error').textContent = text(job.last_error);

  const attempts = $('#detail-attempts tbody');
  attempts.replaceChildren();
  for (const attempt of detail.attempts) {
    const row = attempts.insertRow();
    cell(row, attempt.attempt, 'num');
    cell(row, time(attempt.started_at));
    cell(row, attempt.duration_ms, 'num');
    cell(row, attempt.outcome);
    cell(row, attempt.error_class);
    cell(row, attempt.http_status, 'num');
    cell(row, attempt.provider_status);
    cell(row, attempt.provider_id);
    cell(row, attempt.error);
  }

  const communication = detail.communication ?? {};
  fillFields($('#detail-communication'), communication, [
    'id', 'customer_id', 'type', 'direction', 'status', 'failure_reason',
    'provider_status', 'provider_message_id', 'updated_at',
  ]);
  $('#detail-payload').textContent = JSON.stringify(detail.payload, null, 2);
  $('#detail-death-block').hidden = !detail.broker_death;
  $('#detail-death').textContent = detail.broker_death ? JSON.stringify(detail.broker_death, null, 2) : '';

  const audit = $('#detail-audit tbody');
  audit.replaceChildren();
  for (const entry of detail.audit) {
    const row = audit.insertRow();
    cell(row, time(entry.at));
    cell(row, entry.operator);
    cell(row, entry.action);
    cell(row, entry.previous_state);
    cell(row, entry.reason);
  }

  $('#replay').disabled = !ELIGIBLE.replay.includes(job.state);
  $('#discard').disabled = !ELIGIBLE.discard.includes(job.state);
  return detail;
}

/** Refreshes the open job until it settles, then the list and the health. */
function followJob(id) {
  if (detailTimer) clearTimeout(detailTimer);
  const tick = guarded(async () => {
    if (id !== openId) return;
    const { job } = await showJob(id);
    if (SETTLED.includes(job.state)) {
      $('#action-note').textContent = `The job is ${job.state}.`;
      await loadJobs();
      await refreshHealth();
    } else {
      $('#action-note').textContent = `The job is ${job.state}…`;
      detailTimer = setTimeout(tick, POLL_MS);
    }
  });
  detailTimer = setTimeout(tick, POLL_MS);
}

/** Asks for the reason of an action; null when the operator cancels. */
function askReason(title, what) {
  const dialog = $('#reason-dialog');
  $('#reason-title').textContent = title;
  $('#reason-what').textContent = what;
  $('#reason').value = '';
  dialog.showModal();
  return new Promise((resolve) => {
    const form = $('#reason-form');
    const finish = (value) => {
      form.removeEventListener('submit', submit);
      $('#reason-cancel').removeEventListener('click', cancel);
      dialog.removeEventListener('cancel', cancel);
      dialog.close();
      resolve(value);
    };
    const submit = (event) => {
      event.preventDefault();
      const reason = $('#reason').value.trim();
      if (reason) finish(reason);
    };
    const cancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    form.addEventListener('submit', submit);
    $('#reason-cancel').addEventListener('click', cancel);
    dialog.addEventListener('cancel', cancel);
  });
}

const actOnJob = (action) => guarded(async () => {
  const id = openId;
  const reason = await askReason(
    `${action === 'replay' ? 'Replay' : 'Discard'} job`,
    action === 'replay'
      ? `Job ${id} runs again from the outbox, its attempts counted afresh.`
      : `Job ${id} will not run again; its communication is marked failed.`,
  );
  if (reason === null) return;
  const answer = await api('POST', `/api/ops/jobs/${encodeURIComponent(id)}/${action}`, { reason });
  clearError();
  $('#action-note').textContent = `${action === 'replay' ? 'Replayed' : 'Discarded'} (was ${answer.previous_state}).`;
  await showJob(id);
  followJob(id);
});

// ---- bulk actions -------------------------------------------------------------------

const actInBulk = (action) => guarded(async () => {
  const filter = currentFilter();
  const description = Object.entries(filter).map(([k, v]) => `${k}=${v}`).join(', ') || 'no filter';
  const reason = await askReason(
    `${action === 'replay' ? 'Replay' : 'Discard'} every matching job`,
    `Every ${filter.state ?? 'dead'} job matching ${description}.`,
  );
  if (reason === null) return;
  const started = await api('POST', `/api/ops/jobs/${action}`, { filter, reason });
  clearError();
  const id = started.action.id;
  const progress = $('#bulk-progress');
  progress.hidden = false;
  for (;;) {
    const { action: row } = await api('GET', `/api/ops/actions/${encodeURIComponent(id)}`);
    const finished = row.done + row.skipped;
    const bar = progress.querySelector('progress');
    bar.max = Math.max(row.matched, 1);
    bar.value = row.matched ? finished : 1;
    $('#bulk-text').textContent =
      `Bulk ${action} ${row.state}: ${finished} of ${row.matched} ` +
      `(${row.done} done, ${row.skipped} skipped, ${row.errors} errors)` +
      (row.last_error ? `. Last error: ${row.last_error}` : '');
    if (row.state === 'done' || row.state === 'failed') break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  await loadJobs();
  await refreshHealth();
});

// ---- wiring -------------------------------------------------------------------------

function start() {
  $('#login-form').addEventListener('submit', guarded(async (event) => {
    event.preventDefault();
    const token = $('#token').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    // One call proves the token is an operator's before the workspace opens.
    try {
      await api('GET', '/api/ops/queues');
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      throw e;
    }
    signIn(token);
  }));
  $('#sign-out').addEventListener('click', () => signOut());
  $('#error-dismiss').addEventListener('click', clearError);
  $('#refresh-health').addEventListener('click', refreshHealth);
  $('#filters').addEventListener('submit', (event) => {
    event.preventDefault();
    loadJobs();
  });
  $('#filters').addEventListener('reset', () => setTimeout(() => loadJobs(), 0));
  $('#load-more').addEventListener('click', () => loadJobs(true));
  $('#close-detail').addEventListener('click', () => {
    openId = null;
    $('#detail').hidden = true;
  });
  $('#replay').addEventListener('click', actOnJob('replay'));
  $('#discard').addEventListener('click', actOnJob('discard'));
  $('#bulk-replay').addEventListener('click', actInBulk('replay'));
  $('#bulk-discard').addEventListener('click', actInBulk('discard'));

  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) signIn(token);
}

start();

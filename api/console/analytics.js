// The analytics page: a client of /api/analytics/ for staff and operators. The token
// lives in this tab's sessionStorage (shared with the operations console) and travels
// only in the Authorization header; API values reach the page as text.

import { barChart, lineChart } from '/ops/charts.js';

const TOKEN_KEY = 'commcenter.ops.token';
const $ = (selector) => document.querySelector(selector);

async function api(path) {
  let response;
  try {
    response = await fetch(path, {
      headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` },
      cache: 'no-store',
    });
  } catch (e) {
    throw Object.assign(new Error(`cannot reach the API: ${e.message}`), { status: 0 });
  }
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data?.error?.message ?? `the API answered ${response.status}`;
    throw Object.assign(new Error(`${message} (HTTP ${response.status})`), { status: response.status });
  }
  return data;
}

function showError(error) {
  $('#error-text').textContent = error.message ?? String(error);
  $('#error').hidden = false;
  if (error.status === 401) signOut('Your token was refused (expired or wrong): sign in again.');
}

/** Seconds as words a person reads at a glance. */
function duration(seconds) {
  if (seconds === null || seconds === undefined) return '-';
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function isoDate(date) {
  return date.toISOString().slice(0, 10);
}

function setLastDays(days) {
  const today = new Date();
  $('#to').value = isoDate(today);
  $('#from').value = isoDate(new Date(today.getTime() - (days - 1) * 86400000));
}

function params(extra = {}) {
  const form = new FormData($('#range'));
  const query = new URLSearchParams({ from: form.get('from'), to: form.get('to'), tz: form.get('tz'), ...extra });
  if (form.get('channel')) query.set('channel', form.get('channel'));
  return query;
}

function figure(list, name, value, note) {
  const dt = document.createElement('dt');
  dt.textContent = name;
  const dd = document.createElement('dd');
  dd.textContent = value;
  dd.dataset.figure = name;
  if (note) {
    const small = document.createElement('small');
    small.textContent = ` ${note}`;
    dd.append(small);
  }
  const item = document.createElement('div');
  item.append(dt, dd);
  list.append(item);
}

function bandLabel(band, previous) {
  if (band.under_seconds === null) return `over ${duration(previous)}`;
  return `< ${duration(band.under_seconds)}`;
}

/** Counts loads: only the latest one asked for may draw. */
let loads = 0;

async function load() {
  const mine = ++loads;
  const bucket = new FormData($('#range')).get('bucket');
  const [summary, volume, staff] = await Promise.all([
    api(`/api/analytics/summary?${params()}`),
    api(`/api/analytics/volume?${params({ bucket })}`),
    api(`/api/analytics/response-times?${params({ group_by: 'staff', limit: '20' })}`),
  ]);
  // A range picked while this one was on its way: its answer, not this one, is drawn
  // (the first load after sign-in could otherwise land last and redraw 30 days).
  if (mine !== loads) return;
  $('#error').hidden = true;
  $('#range-note').textContent =
    `${new Date(summary.from).toISOString()} to ${new Date(summary.to).toISOString()} (${summary.tz})`;

  const list = $('#summary');
  list.replaceChildren();
  const first = summary.first_response_seconds;
  const all = summary.response_seconds;
  figure(list, 'Inbound', summary.inbound);
  figure(list, 'Outbound', summary.outbound);
  figure(list, 'First response, median', duration(first.median), `90% within ${duration(first.p90)}`);
  figure(list, 'Waiting for a first response', first.unanswered);
  figure(list, 'Response, median', duration(all.median), `90% within ${duration(all.p90)}`);
  figure(list, 'Unanswered messages', all.unanswered);
  const read = summary.read_rate;
  figure(list, 'Read', read.rate === null ? '-' : `${Math.round(read.rate * 100)} %`, `${read.read} of ${read.outbound}`);
  const c = summary.conversations;
  figure(list, 'Conversations', `${c.opened} opened`, `${c.closed} closed, ${c.reopened} reopened, ${c.archived} archived`);

  const labels = volume.points.map((p) => (bucket === 'hour' ? p.local.slice(5, 16).replace('T', ' ') : p.local.slice(0, 10)));
  lineChart($('#volume-chart'), `Messages per ${bucket}`, {
    labels,
    series: [
      { name: 'inbound', values: volume.points.map((p) => p.inbound) },
      { name: 'outbound', values: volume.points.map((p) => p.outbound) },
    ],
  });

  const bands = summary.first_response_distribution;
  barChart($('#first-response-chart'), 'First responses by how long they took', {
    labels: [...bands.map((b, i) => bandLabel(b, bands[i - 1]?.under_seconds)), 'waiting'],
    series: [{ name: 'first responses', values: [...bands.map((b) => b.answered), first.unanswered] }],
  });

  const channels = Object.entries(summary.channels);
  barChart($('#channel-chart'), 'Messages by channel', {
    labels: channels.map(([name]) => name),
    series: [
      { name: 'inbound', values: channels.map(([, f]) => f.inbound) },
      { name: 'outbound', values: channels.map(([, f]) => f.outbound) },
    ],
  });

  const body = $('#staff-table tbody');
  body.replaceChildren();
  for (const group of staff.groups) {
    const row = body.insertRow();
    for (const [value, className] of [
      [group.key],
      [group.response_seconds.answered, 'num'],
      [duration(group.response_seconds.median), 'num'],
      [duration(group.response_seconds.p90), 'num'],
      [group.first_response_seconds.answered, 'num'],
      [duration(group.first_response_seconds.median), 'num'],
    ]) {
      const cell = row.insertCell();
      cell.textContent = String(value);
      if (className) cell.className = className;
    }
  }
  if (!staff.groups.length) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = 6;
    cell.textContent = 'Nobody answered in this range.';
  }
}

const guardedLoad = async () => {
  try {
    await load();
  } catch (e) {
    showError(e);
  }
};

function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  $('#login').hidden = true;
  $('#workspace').hidden = false;
  $('#sign-out').hidden = false;
  guardedLoad();
}

function signOut(note) {
  sessionStorage.removeItem(TOKEN_KEY);
  $('#workspace').hidden = true;
  $('#sign-out').hidden = true;
  $('#login').hidden = false;
  $('#token').value = '';
  $('#who').textContent = note ?? '';
}

$('#login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  signIn($('#token').value.trim());
});
$('#sign-out').addEventListener('click', () => signOut());
$('#error-dismiss').addEventListener('click', () => { $('#error').hidden = true; });
$('#range').addEventListener('submit', (event) => {
  event.preventDefault();
  guardedLoad();
});
$('#last-7').addEventListener('click', () => { setLastDays(7); guardedLoad(); });
$('#last-30').addEventListener('click', () => { setLastDays(30); guardedLoad(); });

setLastDays(30);
if (sessionStorage.getItem(TOKEN_KEY)) signIn(sessionStorage.getItem(TOKEN_KEY));

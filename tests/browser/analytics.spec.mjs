// The analytics page in real headless Chromium: sign in as staff, pick a range, and
// read the charts: one volume point per day with the known counts, the first-response
// bands, the channel split and the per-staff table; a shorter range redraws them.
// Driven by tests/tests/e2e/analytics.rs, which writes the known messages.
//
// Environment:
//   CONSOLE_URL   the API's base URL (the page is at CONSOLE_URL/ops/analytics)
//   STAFF_TOKEN   a staff member's bearer token
//   FROM, TO      the range to pick (ISO dates)
//   INBOUND       the inbound count per day in that range, comma-separated
//   SHORT_TO      the end of a shorter range starting at FROM
//   STAFF         the staff ids expected in the table, most answers first, comma-separated
//   CHROMIUM      the browser (default /usr/bin/chromium)
//   SCREENSHOTS   a directory to save a screenshot in (optional)
// Exits 0 when every step passed, 1 with the failing step if not.

import { launch, need, watch } from './harness.mjs';

const base = need('CONSOLE_URL');
const token = need('STAFF_TOKEN');
const from = need('FROM');
const to = need('TO');
const inbound = need('INBOUND').split(',').map(Number);
const shortTo = need('SHORT_TO');
const staff = need('STAFF').split(',');
const TIMEOUT = 30_000;

const browser = await launch();
const problems = [];
let step = 'starting';

async function values(page, chart, series) {
  return page.locator(`${chart} .point[data-series="${series}"]`)
    .evaluateAll((points) => points.map((p) => Number(p.dataset.value)));
}

async function until(what, check) {
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    const problem = await check();
    if (!problem) return;
    if (Date.now() > deadline) throw new Error(`${what}: ${problem}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  page.setDefaultTimeout(TIMEOUT);
  // The reversed range's 400 is asked for.
  watch(page, 'analytics', problems, (status, url) => status === 400 && url.includes('/api/analytics/'));

  step = 'open the page and sign in as staff';
  const response = await page.goto(`${base}/ops/analytics`);
  if (!response.ok()) throw new Error(`GET /ops/analytics answered ${response.status()}`);
  await page.getByLabel('Staff or operator token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#workspace').waitFor({ state: 'visible' });

  step = 'pick the range';
  await page.getByLabel('From').fill(from);
  await page.getByLabel('To (the whole day)').fill(to);
  await page.getByRole('button', { name: 'Show', exact: true }).click();

  step = 'one volume point per day, with the known counts';
  await until('the volume chart', async () => {
    const got = await values(page, '#volume-chart', 'inbound');
    return got.join(',') === inbound.join(',') ? null : `inbound per day ${got.join(',')}, not ${inbound.join(',')}`;
  });
  const outbound = await values(page, '#volume-chart', 'outbound');
  if (outbound.length !== inbound.length) throw new Error(`${outbound.length} outbound points`);

  step = 'the summary, the first-response bands, the channels and who answered';
  const total = inbound.reduce((a, b) => a + b, 0);
  await page.locator('dd[data-figure="Inbound"]').filter({ hasText: new RegExp(`^${total}$`) }).waitFor();
  const bands = await values(page, '#first-response-chart', 'first responses');
  if (bands.length !== 8) throw new Error(`${bands.length} first-response bars, not 8 (7 bands and waiting)`);
  const channels = await values(page, '#channel-chart', 'inbound');
  if (channels.reduce((a, b) => a + b, 0) !== total) throw new Error(`channels add up to ${channels}`);
  const rows = await page.locator('#staff-table tbody tr td:first-child').allTextContents();
  if (rows.join(',') !== staff.join(',')) throw new Error(`the staff table lists ${rows.join(',')}`);
  if (process.env.SCREENSHOTS) {
    await page.screenshot({ path: `${process.env.SCREENSHOTS}/analytics.png`, fullPage: true });
  }

  step = 'a shorter range redraws the charts';
  await page.getByLabel('To (the whole day)').fill(shortTo);
  await page.getByRole('button', { name: 'Show', exact: true }).click();
  const days = Math.round((Date.parse(shortTo) - Date.parse(from)) / 86400000) + 1;
  await until('the shorter volume chart', async () => {
    const got = await values(page, '#volume-chart', 'inbound');
    return got.length === days ? null : `${got.length} points, not ${days}`;
  });

  step = 'a range that ends before it starts is refused in words';
  await page.getByLabel('To (the whole day)').fill('2000-01-01');
  await page.getByRole('button', { name: 'Show', exact: true }).click();
  await page.getByRole('alert').filter({ hasText: 'the range ends' }).waitFor();

  step = 'no errors on the page';
  if (problems.length) throw new Error(`problems:\n${problems.join('\n')}`);

  console.log(`analytics: ${inbound.length} days drawn, then ${days}`);
  await browser.close();
} catch (error) {
  console.error(`analytics test failed at step "${step}": ${error.message}`);
  if (problems.length) console.error(`problems:\n${problems.join('\n')}`);
  await browser.close();
  process.exit(1);
}

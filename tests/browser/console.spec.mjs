// The operators' console in real headless Chromium: sign in with a token, filter to a
// customer's dead jobs, open the job, read why it failed, replay it with a reason, and
// watch it succeed. Driven by tests/tests/e2e/console.rs, which sets up the dead job.
//
// Environment:
//   CONSOLE_URL     the API's base URL (the page is at CONSOLE_URL/ops)
//   OPERATOR_TOKEN  an operator's bearer token
//   CUSTOMER_ID     the customer whose dead job to find
//   OTHER_CUSTOMER  a customer whose dead jobs are discarded in bulk
//   EXPECT_ERROR    text the job's last error contains
//   REASON          the replay's reason (kept in the audit)
//   CHROMIUM        the browser (default /usr/bin/chromium)
// Exits 0 when every step passed, 1 with the failing step and the page's state if not.

import { launch, need, watch } from './harness.mjs';

const base = need('CONSOLE_URL');
const token = need('OPERATOR_TOKEN');
const customer = need('CUSTOMER_ID');
const otherCustomer = need('OTHER_CUSTOMER');
const expectError = need('EXPECT_ERROR');
const reason = need('REASON');
const TIMEOUT = 30_000;

const browser = await launch();
const problems = [];
const requests = [];
let step = 'starting';

try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT);
  // The wrong token's 401 is asked for.
  watch(page, 'console', problems, (status, url) => status === 401 && url === `${base}/api/ops/queues`);
  page.on('request', (request) => requests.push(request));

  step = 'open the console';
  const response = await page.goto(`${base}/ops`);
  if (!response.ok()) throw new Error(`GET /ops answered ${response.status()}`);

  step = 'a wrong token is refused with the reason';
  await page.getByLabel('Operator token').fill('not-a-token');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'HTTP 401' }).waitFor();

  step = 'sign in';
  await page.getByLabel('Operator token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#workspace').waitFor({ state: 'visible' });

  step = 'queue health at the top shows the dead job';
  await page.locator('#states button[data-state="dead"] .n').filter({ hasText: /^[1-9]/ }).waitFor();
  await page.getByRole('table', { name: 'RabbitMQ queues' }).locator('tbody tr').first().waitFor();

  step = 'filter to the customer\'s dead jobs';
  await page.getByLabel('State', { exact: true }).selectOption('dead');
  await page.getByLabel('Customer', { exact: true }).fill(customer);
  await page.getByRole('button', { name: 'Apply filters' }).click();
  const rows = page.locator('#job-table tbody tr');
  await page.locator('#counts').filter({ hasText: 'Showing 1 of 1 matching jobs' }).waitFor();
  const row = rows.first();
  const jobId = await row.getAttribute('data-job-id');
  const rowText = await row.innerText();
  if (!rowText.includes('dead') || !rowText.includes(customer)) {
    throw new Error(`the row is not the customer's dead job: ${rowText}`);
  }

  step = 'open the job and see why it failed';
  await row.getByRole('button', { name: `Open job ${jobId}` }).click();
  const detail = page.locator('#detail');
  await detail.waitFor({ state: 'visible' });
  await page.locator('#detail-id').filter({ hasText: jobId }).waitFor();
  const state = page.locator('#detail-job dd[data-field="state"]');
  await state.filter({ hasText: /^dead$/ }).waitFor();
  await page.locator('#detail-error').filter({ hasText: expectError }).waitFor();
  await page.locator('#detail-attempts tbody tr').filter({ hasText: 'permanent' }).first().waitFor();
  await page.locator('#detail-communication dd[data-field="status"]').filter({ hasText: 'failed' }).waitFor();

  step = 'replay it with a reason';
  await page.getByRole('button', { name: 'Replay…' }).click();
  const dialog = page.getByRole('dialog');
  await dialog.waitFor({ state: 'visible' });
  await dialog.getByLabel(/Reason/).fill(reason);
  await dialog.getByRole('button', { name: 'Confirm' }).click();

  step = 'watch it succeed';
  await state.filter({ hasText: /^succeeded$/ }).waitFor();
  await page.locator('#detail-audit tbody tr').filter({ hasText: reason }).waitFor();
  await page.locator('#detail-communication dd[data-field="status"]').filter({ hasText: /sent|delivered/ }).waitFor();
  // The replay button no longer applies to a job that succeeded.
  if (!(await page.getByRole('button', { name: 'Replay…' }).isDisabled())) {
    throw new Error('Replay is still enabled on a succeeded job');
  }

  step = 'the last hour shows the jobs that died and the one that succeeded, minute by minute';
  const counted = async (series) => {
    const values = await page.locator(`#jobs-chart .point[data-series="${series}"]`)
      .evaluateAll((points) => points.map((p) => Number(p.dataset.value)));
    return values;
  };
  for (let tries = 0; ; tries += 1) {
    await page.getByRole('button', { name: 'Refresh' }).click();
    await page.locator('#health-updated').filter({ hasText: 'updated' }).waitFor();
    const dead = await counted('dead');
    const succeeded = await counted('succeeded');
    if (dead.length !== 60 || succeeded.length !== 60) {
      throw new Error(`the chart has ${dead.length} dead and ${succeeded.length} succeeded points, not 60`);
    }
    const sum = (values) => values.reduce((a, b) => a + b, 0);
    if (sum(dead) >= 2 && sum(succeeded) >= 1) break;
    if (tries > 40) throw new Error(`the chart shows ${sum(dead)} dead, ${sum(succeeded)} succeeded`);
    await page.waitForTimeout(250);
  }
  if (process.env.SCREENSHOTS) {
    await page.locator('#activity').screenshot({ path: `${process.env.SCREENSHOTS}/ops-console.png` });
  }

  step = 'discard another customer\'s dead jobs in bulk and follow the progress';
  await page.getByLabel('Customer', { exact: true }).fill(otherCustomer);
  await page.getByRole('button', { name: 'Apply filters' }).click();
  await page.locator('#counts').filter({ hasText: 'Showing 1 of 1 matching jobs' }).waitFor();
  await page.getByRole('button', { name: 'Discard all matching…' }).click();
  await dialog.waitFor({ state: 'visible' });
  await dialog.getByLabel(/Reason/).fill('customer asked us to stop');
  await dialog.getByRole('button', { name: 'Confirm' }).click();
  await page.locator('#bulk-text').filter({ hasText: 'Bulk discard done: 1 of 1 (1 done, 0 skipped, 0 errors)' }).waitFor();
  // The list follows: the dead job is gone from the dead filter.
  await page.locator('#counts').filter({ hasText: 'No jobs match.' }).waitFor();

  step = 'the token never appears in a URL';
  const leaks = requests.filter((request) => request.url().includes(token));
  if (leaks.length) throw new Error(`the token is in a URL: ${leaks[0].url()}`);
  const unauthenticated = requests.filter(
    (request) => request.url().includes('/api/ops/') && !request.headers().authorization,
  );
  if (unauthenticated.length) throw new Error(`a call went without the token: ${unauthenticated[0].url()}`);

  step = 'no errors on the page';
  if (problems.length) throw new Error(`problems:\n${problems.join('\n')}`);

  console.log(`console: replayed job ${jobId} of ${customer}, and it succeeded`);
  await browser.close();
} catch (error) {
  console.error(`console test failed at step "${step}": ${error.message}`);
  if (problems.length) console.error(`problems:\n${problems.join('\n')}`);
  await browser.close();
  process.exit(1);
}

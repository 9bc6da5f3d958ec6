// The reference client at /portal in real headless Chromium: a customer and a staff
// member, each in a browser context of their own and on a different api instance, see
// each other's messages, typing, presence and receipts; a photo goes up with a progress
// bar and comes back as a thumbnail; a page whose WebSocket is cut shows that it is
// reconnecting and recovers what was sent meanwhile; sending works from the keyboard;
// staff edit and delete their own messages; a crew member sees their crew's project,
// acknowledges its dispatch and leaves an internal note, marked as such for staff and
// never shown to the customer. Driven by tests/tests/e2e/portal.rs, which starts the two
// instances.
//
// Environment:
//   CUSTOMER_URL, STAFF_URL      the two api instances' base URLs
//   CUSTOMER_TOKEN, STAFF_TOKEN, CREW_TOKEN  bearer tokens (crew-n1's crew is dispatched
//                                to the customer's project "Gutter repair")
//   CUSTOMER_ID                  the customer's conversation
//   FIRST_MESSAGE                a message the customer sent before the test
//   OLDER_MESSAGES               how many staff sent before it ("Earlier note N ")
//   PHOTO                        a PNG file to upload
//   (an in-app template "arrival", "Hi {{name}}, your crew arrives at {{time}}", exists)
//   CHROMIUM                     the browser (default /usr/bin/chromium)
//   SCREENSHOTS                  a directory to save screenshots in (optional)
// Exits 0 when every step passed, 1 with the failing step if not.

import { launch, need, watch } from './harness.mjs';

const customerUrl = need('CUSTOMER_URL');
const staffUrl = need('STAFF_URL');
const customerToken = need('CUSTOMER_TOKEN');
const staffToken = need('STAFF_TOKEN');
const crewToken = need('CREW_TOKEN');
const customerId = need('CUSTOMER_ID');
const firstMessage = need('FIRST_MESSAGE');
const photo = need('PHOTO');
const TIMEOUT = 30_000;

const browser = await launch();
const problems = [];
const pages = {};
let step = 'starting';

async function open(url, viewport, label) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  // A thumbnail still being made answers 409 with Retry-After: the page waits and asks
  // again. The missing template variable's 422 and the refused file's are asked for.
  watch(page, label, problems, (status, url) => (status === 409 && url.includes('/file/thumbnails/'))
    || (status === 422 && (url.endsWith('/api/messages/send') || url.endsWith('/api/communications/upload'))));
  pages[label] = page;
  return { context, page };
}

/** Signs in; `keyboard`: from the keyboard alone (Tab to the field, type, Enter). */
async function signIn(page, url, token, { keyboard = false } = {}) {
  const response = await page.goto(`${url}/portal`);
  if (!response.ok()) throw new Error(`GET /portal answered ${response.status()}`);
  // The sign-in screen says where a token comes from.
  await page.getByTestId('where-tokens').filter({ hasText: 'target/run.env' }).filter({ hasText: 'commcenterctl token' }).waitFor();
  if (keyboard) {
    for (let i = 0; i < 10 && !(await page.getByTestId('token').evaluate((el) => el === document.activeElement)); i += 1) {
      await page.keyboard.press('Tab');
    }
    await page.keyboard.type(token);
    await page.keyboard.press('Enter');
  } else {
    await page.getByTestId('token').fill(token);
    await page.getByTestId('sign-in').click();
  }
  await page.getByTestId('connection').filter({ hasText: 'live' }).waitFor();
}

const message = (page, text) => page.getByTestId('message').filter({ hasText: text });

try {
  // The customer on a phone-sized screen, through a WebSocket the test can cut.
  step = 'the customer signs in on a phone-sized screen';
  const customer = await open(customerUrl, { width: 390, height: 844 }, 'customer');
  let cut = false;
  const sockets = [];
  await customer.page.routeWebSocket(/\/api\/ws\//, (ws) => {
    if (cut) {
      ws.close({ code: 4000, reason: 'cut by the test' });
      return;
    }
    ws.connectToServer();
    sockets.push(ws);
  });
  await signIn(customer.page, customerUrl, customerToken, { keyboard: true });
  await message(customer.page, firstMessage).waitFor();

  step = 'the newest page first; scrolling up brings the older ones';
  const older = Number(need('OLDER_MESSAGES'));
  let count = await customer.page.getByTestId('message').count();
  if (count !== 30) throw new Error(`the first page shows ${count} messages, not 30`);
  await customer.page.locator('#messages').evaluate((list) => { list.scrollTop = 0; });
  await customer.page.getByTestId('message-text').getByText('Earlier note 1', { exact: true }).waitFor();
  count = await customer.page.getByTestId('message').count();
  if (count !== older + 1) throw new Error(`after scrolling up ${count} messages, not ${older + 1}`);
  await customer.page.locator('#messages').evaluate((list) => { list.scrollTop = list.scrollHeight; });
  await customer.page.getByTestId('presence').filter({ hasText: 'offline' }).waitFor();

  step = 'staff sign in on the other instance and open the conversation from the list';
  const staff = await open(staffUrl, { width: 1280, height: 800 }, 'staff');
  await signIn(staff.page, staffUrl, staffToken);
  const row = staff.page.getByTestId('conversation').filter({ hasText: customerId });
  await row.getByTestId('unread').filter({ hasText: '1' }).waitFor();
  await row.click();
  await message(staff.page, firstMessage).waitFor();

  step = 'each sees the other online, across instances';
  await staff.page.getByTestId('presence').filter({ hasText: /^online$/ }).waitFor();
  await customer.page.getByTestId('presence').filter({ hasText: /^online$/ }).waitFor();

  step = 'the customer types (the composer has the focus), and staff see it';
  const composer = customer.page.getByTestId('composer');
  if (!(await composer.evaluate((el) => el === document.activeElement))) {
    throw new Error('the composer does not have the focus after signing in');
  }
  await customer.page.keyboard.type('Is the crew');
  await staff.page.getByTestId('typing').filter({ hasText: 'The customer is typing' }).waitFor();

  step = 'the customer sends from the keyboard: Shift+Enter is a new line, Enter sends';
  await customer.page.keyboard.press('Shift+Enter');
  await customer.page.keyboard.type('still coming today?');
  await customer.page.keyboard.press('Enter');
  await message(staff.page, 'still coming today?').waitFor();
  const lines = await message(staff.page, 'still coming today?').getByTestId('message-text').innerText();
  if (!lines.includes('Is the crew\nstill coming today?')) throw new Error(`the new line was lost: ${JSON.stringify(lines)}`);
  if ((await composer.inputValue()) !== '') throw new Error('the composer was not cleared');
  // A message from the customer ends their typing indicator.
  await staff.page.getByTestId('typing').waitFor({ state: 'hidden' });

  step = 'staff answer; the customer sees it, and the read receipt comes back';
  await staff.page.getByTestId('composer').fill('Yes, at 2pm');
  await staff.page.getByTestId('send').click();
  await message(customer.page, 'Yes, at 2pm').waitFor();
  await message(staff.page, 'Yes, at 2pm').getByTestId('receipt').filter({ hasText: '✓✓' }).waitFor();
  // And the customer's own messages show as read by staff.
  await message(customer.page, 'still coming today?').getByTestId('receipt').filter({ hasText: '✓✓' }).waitFor();

  step = 'a photo goes up with a progress bar and comes back as a thumbnail';
  await customer.page.getByTestId('attach').setInputFiles(photo);
  await customer.page.getByTestId('pending-file').locator('img').waitFor();
  await composer.fill('The gutter, photographed');
  await customer.page.getByTestId('send').click();
  await customer.page.locator('#upload-text').filter({ hasText: 'Uploaded' }).waitFor();
  const bar = await customer.page.getByTestId('upload-progress').evaluate((p) => p.value);
  if (bar !== 1) throw new Error(`the progress bar ended at ${bar}`);
  const thumbnail = message(staff.page, 'The gutter, photographed').getByTestId('thumbnail');
  await thumbnail.waitFor();
  await staff.page.waitForFunction(
    (img) => img.complete && img.naturalWidth > 0,
    await thumbnail.elementHandle(),
  );
  await message(staff.page, 'The gutter, photographed').getByTestId('download').waitFor();

  step = 'a refused file is named with the reason, and nothing is sent';
  const before = await customer.page.getByTestId('message').count();
  await customer.page.getByTestId('attach').setInputFiles({
    name: 'invoice.pdf', mimeType: 'application/pdf', buffer: Buffer.from('MZ\x90\x00 not really a PDF'),
  });
  await customer.page.getByTestId('send').click();
  await customer.page.getByRole('alert').filter({ hasText: 'invoice.pdf' }).filter({ hasText: 'executables are not accepted' }).waitFor();
  if ((await customer.page.getByTestId('message').count()) !== before) throw new Error('a message went with a refused file');
  await customer.page.getByRole('button', { name: 'Remove invoice.pdf' }).click();
  await customer.page.getByRole('button', { name: 'Dismiss' }).click();

  step = 'the customer\'s connection drops: it says so, and recovers what was sent meanwhile';
  cut = true;
  for (const ws of sockets.splice(0)) await ws.close({ code: 4000, reason: 'cut by the test' });
  await customer.page.getByTestId('connection').filter({ hasText: 'reconnecting' }).waitFor();
  await staff.page.getByTestId('composer').fill('Sent while you were away');
  await staff.page.getByTestId('composer').press('Enter');
  await message(staff.page, 'Sent while you were away').waitFor();
  if (await message(customer.page, 'Sent while you were away').count()) {
    throw new Error('the message arrived although the connection was cut');
  }
  cut = false;
  await customer.page.getByTestId('connection').filter({ hasText: 'live' }).waitFor();
  await message(customer.page, 'Sent while you were away').waitFor();

  step = 'staff edit and delete their own messages; the other side sees both';
  const mineOnStaff = (text) => message(staff.page, text);
  if (await message(customer.page, 'Yes, at 2pm').getByTestId('edit').count()) {
    throw new Error('the customer may edit a message staff wrote');
  }
  await mineOnStaff('Yes, at 2pm').getByTestId('edit').click();
  await mineOnStaff('Yes, at 2pm').getByTestId('edit-text').fill('Yes, at 3pm');
  await mineOnStaff('Yes, at 2pm').getByTestId('save-edit').click();
  await message(customer.page, 'Yes, at 3pm (edited)').waitFor();
  await mineOnStaff('Yes, at 3pm (edited)').waitFor();
  const removing = mineOnStaff('Sent while you were away').getByTestId('delete');
  await removing.click();
  await removing.filter({ hasText: 'Delete for everyone?' }).click();
  await customer.page.getByTestId('message').filter({ hasText: 'This message was deleted.' }).waitFor();
  await staff.page.getByTestId('message').filter({ hasText: 'This message was deleted.' }).waitFor();

  step = 'staff answer from a template; a missing variable is named in words';
  await staff.page.getByLabel('Template').selectOption({ label: 'arrival' });
  await staff.page.getByLabel('name', { exact: true }).fill('Ann');
  await staff.page.getByTestId('send').click();
  await staff.page.getByRole('alert').filter({ hasText: 'variables: missing time' }).waitFor();
  await staff.page.getByLabel('time', { exact: true }).fill('3pm');
  await staff.page.getByTestId('send').click();
  await message(customer.page, 'Hi Ann, your crew arrives at 3pm').waitFor();
  // The error goes once the message went; the template is put back to none.
  await staff.page.getByRole('alert').waitFor({ state: 'hidden' });
  if ((await staff.page.getByLabel('Template').inputValue()) !== '') throw new Error('the template stayed chosen');

  step = 'a crew member sees their project and its dispatch, and acknowledges it';
  const crew = await open(customerUrl, { width: 390, height: 844 }, 'crew');
  await signIn(crew.page, customerUrl, crewToken);
  const project = crew.page.getByTestId('projects').locator('li').filter({ hasText: 'Gutter repair' });
  await project.getByTestId('dispatch').filter({ hasText: 'Bring the long ladder' }).waitFor();
  await project.getByTestId('acknowledge').click();
  await project.getByTestId('acknowledged').waitFor();

  step = 'the crew member leaves an internal note: staff see it marked, the customer never';
  await project.getByTestId('project').click();
  await crew.page.locator('#conversation-title').filter({ hasText: 'Gutter repair' }).waitFor();
  for (const tab of ['sms', 'email', 'phone']) {
    if (await crew.page.getByTestId(`tab-${tab}`).isVisible()) throw new Error(`a crew member sees the ${tab} tab`);
  }
  await crew.page.getByTestId('internal').check();
  await crew.page.getByTestId('composer').fill('Gate code is 4411');
  await crew.page.getByTestId('send').click();
  await message(crew.page, 'Gate code is 4411').getByTestId('internal-badge').waitFor();
  await message(staff.page, 'Gate code is 4411').getByTestId('internal-badge').waitFor();
  await staff.page.getByTestId('composer').fill('The crew is close');
  await staff.page.getByTestId('send').click();
  await message(customer.page, 'The crew is close').waitFor();
  if (await message(customer.page, 'Gate code is 4411').count()) throw new Error('the customer was shown an internal note');
  if (await message(staff.page, 'The crew is close').getByTestId('internal-badge').count()) {
    throw new Error('a public message is marked internal');
  }

  step = 'staff search, and the matches are highlighted';
  await staff.page.getByTestId('search').fill('gutter');
  await staff.page.getByTestId('search').press('Enter');
  await staff.page.getByTestId('search-result').locator('mark', { hasText: /gutter/i }).first().waitFor();
  await staff.page.getByTestId('search').fill('');
  await staff.page.getByTestId('search').press('Enter');
  await staff.page.getByTestId('conversation').first().waitFor();

  step = 'the channels have their own tabs';
  await staff.page.getByTestId('tab-sms').click();
  await staff.page.getByLabel('To', { exact: true }).waitFor();
  if (await message(staff.page, 'Yes, at 3pm').count()) throw new Error('the SMS tab shows in-app messages');
  await staff.page.getByTestId('tab-inapp').click();
  await message(staff.page, 'Yes, at 3pm').waitFor();

  if (process.env.SCREENSHOTS) {
    await customer.page.screenshot({ path: `${process.env.SCREENSHOTS}/portal-customer.png` });
    await staff.page.screenshot({ path: `${process.env.SCREENSHOTS}/portal-staff.png` });
    await crew.page.screenshot({ path: `${process.env.SCREENSHOTS}/portal-crew.png` });
  }

  step = 'no console errors, no CSP violations, no failed requests';
  if (problems.length) throw new Error(`problems:\n${problems.join('\n')}`);

  console.log('portal: messages, typing, presence, receipts, a photo, a recovery, edits, a crew\'s dispatch and internal note, in three browsers');
  await browser.close();
} catch (error) {
  console.error(`portal test failed at step "${step}": ${error.message}`);
  if (problems.length) console.error(`problems:\n${problems.join('\n')}`);
  // What each page showed, to tell why.
  for (const [label, page] of Object.entries(pages)) {
    const shown = await page.evaluate(() => ({
      error: document.querySelector('#error')?.hidden ? null : document.querySelector('#error-text')?.textContent,
      connection: document.querySelector('#connection')?.textContent,
      messages: [...document.querySelectorAll('[data-testid="message"]')].map((m) => m.innerText.replace(/\s+/g, ' ')),
    })).catch((e) => `(unreadable: ${e.message})`);
    console.error(`${label} page: ${JSON.stringify(shown)}`);
  }
  await browser.close();
  process.exit(1);
}

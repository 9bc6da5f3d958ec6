// What every browser test shares: its settings from the environment, Debian's Chromium
// launched headless, and a watch on each page that fails the test on anything the page
// logs as an error (an exception, a CSP violation) and on any failed request but those
// the test makes fail on purpose.

import { chromium } from 'playwright-core';

/** The environment variable `name`; the test stops at once when it is not set. */
export function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(1);
  }
  return value;
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // No sandbox: CI runs this as root in a container, where Chromium's sandbox cannot start.
    args: ['--no-sandbox'],
  });
}

/**
 * Adds to `problems` what goes wrong on `page`, each line prefixed with `label`.
 * `expected(status, url)` says which failed responses the test asked for (the browser's
 * own /favicon.ico is always expected). Failed loads are judged by their response, so
 * the console's "Failed to load resource" lines are not counted twice.
 */
export function watch(page, label, problems, expected = () => false) {
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      problems.push(`${label}: ${message.text()}`);
    }
  });
  page.on('pageerror', (error) => problems.push(`${label}: ${error.message}`));
  page.on('response', (response) => {
    const [status, url] = [response.status(), response.url()];
    if (status >= 400 && !url.endsWith('/favicon.ico') && !expected(status, url)) {
      problems.push(`${label}: ${status} ${url}`);
    }
  });
}

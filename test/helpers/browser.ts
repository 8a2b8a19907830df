/**
 * Headless Chromium for the dashboard tests and benchmarks: Debian's `chromium`
 * (/usr/bin/chromium, installed by scripts/test.sh) driven by playwright-core, which
 * downloads no browser of its own. The flags keep Chromium off the network it would
 * otherwise try to reach (this machine's closed network refuses those connections) and
 * let it run as root in a container.
 *
 * Screenshots go to `test-results/screenshots/` (not committed) so a person can look at
 * them after a run; the README shows two that were copied to `docs/screenshots/`.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { REPO } from './cluster.js';

export const CHROMIUM = process.env.KILN_CHROMIUM ?? '/usr/bin/chromium';
export const SCREENSHOT_DIR = join(REPO, 'test-results', 'screenshots');

const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
];

export function requireChromium(): void {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/test.sh installs Debian's chromium (apt-get install chromium)`);
}

/** A headless Chromium; close it in afterAll. */
export async function launchBrowser(): Promise<Browser> {
  requireChromium();
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
}

/** A fresh context (its own cookies) with a laptop-sized viewport and the given colour scheme. */
export function newContext(browser: Browser, opts: { baseURL: string; colorScheme?: 'light' | 'dark'; width?: number; height?: number }): Promise<BrowserContext> {
  return browser.newContext({
    baseURL: opts.baseURL,
    colorScheme: opts.colorScheme ?? 'light',
    viewport: { width: opts.width ?? 1440, height: opts.height ?? 900 },
  });
}

/** Saves a full-page screenshot as test-results/screenshots/<name>.png and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  await mkdir(SCREENSHOT_DIR, { recursive: true });
  const path = join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  return path;
}

/**
 * Uncaught page errors and the page's own console errors, collected for assertions (a page
 * that throws is a failure). The browser's "Failed to load resource" lines are left out:
 * they report HTTP answers the page handles (the 401 of the session check before sign-in)
 * and connections a test drops on purpose.
 */
export function collectPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !msg.text().startsWith('Failed to load resource')) errors.push(`console: ${msg.text()}`);
  });
  return errors;
}

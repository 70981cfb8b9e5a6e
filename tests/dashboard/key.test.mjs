// Drives the dashboard's key dialog in headless Chromium against a real inferq server:
// the prompt, a wrong key, a key without the admin role, "Forget key" and a reload.
//
// These tests need the admin API (GET /v1/admin/queues, /v1/admin/jobs, /v1/admin/jobs/ID and
// /v1/admin/workers). Against a server without it they fail with the page's "not available"
// notice in their message.
//
// SPDX-License-Identifier: MIT

import assert from 'node:assert/strict';
import { it } from 'node:test';

import {
	assertNoProblems,
	call,
	signIn,
	submit,
	useDashboard,
	waitForView,
} from './support/dashboard.mjs';

const env = useDashboard();
const open = (viewport) => env.open(viewport);

it('page loads cleanly and asks for a key', async () => {
	const { page, problems } = await open();
	const response = await page.goto(`${env.server.origin}/`);
	assert.equal(response.status(), 200);
	assert.match(response.headers()['content-security-policy'], /default-src 'self'/);

	await page.locator('#key-dialog[open]').waitFor();
	assert.equal(await page.locator('#key-message').isHidden(), true);
	await page.fill('#key-input', env.server.adminKey);
	await page.click('#key-form button[type=submit]');

	await page.locator('#key-dialog').waitFor({ state: 'hidden' });
	await waitForView(page, '[data-testid=queues-table]');
	await page.locator('#refresh-state', { hasText: 'updated' }).waitFor();
	assert.equal(await page.evaluate(() => sessionStorage.getItem('inferq.adminKey')), env.server.adminKey);
	assert.equal(await page.locator('#banner').isHidden(), true);
	assertNoProblems(problems);
});

it('wrong key shows the message and asks again', async () => {
	const { page, problems, expectStatus } = await open();
	expectStatus(401);
	await signIn(page, env.server, '', 'iq_not-a-key');

	const message = page.locator('#key-message');
	await waitForView(page, '#key-message:not([hidden])');
	assert.match(await message.textContent(), /key was rejected \(401 invalid API key/);
	assert.equal(await page.locator('#key-dialog').getAttribute('open'), '');
	assert.equal(await page.evaluate(() => sessionStorage.getItem('inferq.adminKey')), null);

	await page.fill('#key-input', env.server.adminKey);
	await page.click('#key-form button[type=submit]');
	await waitForView(page, '[data-testid=queues-table]');
	await page.locator('#refresh-state', { hasText: 'updated' }).waitFor();
	assert.equal(await page.locator('#key-dialog').isHidden(), true);
	assertNoProblems(problems);
});

it('client key is refused with a 403 message', async () => {
	const created = await call(env.server, 'POST', '/v1/admin/keys', { name: `dash-client-${process.pid}`, role: 'client', models: ['*'] });
	assert.equal(created.status, 200, JSON.stringify(created.body));
	const { page, problems, expectStatus } = await open();
	expectStatus(403);
	await signIn(page, env.server, '', created.body.key);

	const message = page.locator('#key-message');
	await waitForView(page, '#key-message:not([hidden])');
	assert.match(await message.textContent(), /may not use the dashboard \(403 /);
	assertNoProblems(problems);
});

it('forget key removes it and asks again', async () => {
	const { page, problems } = await open();
	await signIn(page, env.server);
	await waitForView(page, '[data-testid=queues-table]');
	await page.locator('#forget-key').waitFor({ state: 'visible' });
	await page.click('#forget-key');

	await page.locator('#key-dialog[open]').waitFor();
	assert.match(await page.locator('#key-message').textContent(), /removed/);
	assert.equal(await page.evaluate(() => sessionStorage.getItem('inferq.adminKey')), null);
	await page.reload();
	await page.locator('#key-dialog[open]').waitFor();
	assertNoProblems(problems);
});

it('key survives a reload of the tab', async () => {
	const { page, problems } = await open();
	await signIn(page, env.server, '#/workers');
	await waitForView(page, '[data-testid=workers-table]');
	await page.reload();
	await waitForView(page, '[data-testid=workers-table]');
	assert.equal(await page.locator('#key-dialog').isHidden(), true);
	assertNoProblems(problems);
});

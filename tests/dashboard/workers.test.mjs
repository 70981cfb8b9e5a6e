// Drives the dashboard's Workers view in headless Chromium against a real inferq server.
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
	claim,
	complete,
	signIn,
	submit,
	uniqueModel,
	useDashboard,
	waitForView,
} from './support/dashboard.mjs';

const env = useDashboard();
const open = (viewport) => env.open(viewport);

it('shows a named worker with its job', async () => {
	const model = uniqueModel('workers');
	const name = `gpu-node-${process.pid}`;
	await submit(env.server, model, { n: 1 });
	await submit(env.server, model, { n: 2 });
	await complete(env.server, await claim(env.server, model, name), { ok: true });
	const holding = await claim(env.server, model, name);

	const { page, problems } = await open();
	await signIn(page, env.server, '#/workers');
	const row = page.locator(`[data-testid=workers-table] tr[data-worker="${name}"]`);
	await waitForView(page, `[data-testid=workers-table] tr[data-worker="${name}"]`);
	assert.equal(await row.locator('[data-field=jobs_done]').textContent(), '1');
	assert.equal(await row.locator('[data-field=jobs_failed]').textContent(), '0');
	assert.match(await row.locator('[data-field=current_jobs]').textContent(), new RegExp(holding.request_id));
	assertNoProblems(problems);
});

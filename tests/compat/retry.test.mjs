// Checks that the official Together TypeScript SDK does not retry inferq's final 4xx
// responses. The SDK retries 408, 409, 429 and 5xx other than 500 unless the response carries
// `x-should-retry: false`, and inferq sends that header on every 4xx except 408 and 429. A proxy
// on 127.0.0.1 counts the requests that really reach the server.
//
// SPDX-License-Identifier: MIT

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import {
	APIError,
	BadRequestError,
	ConflictError,
	NotFoundError,
} from 'together-ai';

import {
	UNKNOWN_ID,
	rejection,
	sdkClient,
	startCountingProxy,
	startServer,
	stopCleanly,
} from './support/inferq.mjs';

let server;

before(async () => {
	server = await startServer(['--max-body-bytes', '1K']);
});

after(async () => {
	if (server) await stopCleanly(server);
});

// Runs call against a fresh counting proxy with a client that may retry twice. Resolves to
// { err, requests, elapsedMs }.
async function throughProxy(call, proxyOptions = {}, maxRetries = 2) {
	const proxy = await startCountingProxy(server.port, proxyOptions);
	try {
		const queue = sdkClient(proxy.baseURL, server.adminKey, { maxRetries }).beta.jig.queue;
		const started = Date.now();
		const err = await rejection(call(queue));
		return { err, requests: proxy.requests, elapsedMs: Date.now() - started };
	} finally {
		await proxy.close();
	}
}

async function canceledJob(model) {
	const queue = sdkClient(server.baseURL, server.adminKey).beta.jig.queue;
	const { requestId } = await queue.submit({ model, payload: {} });
	await queue.cancel({ model, request_id: requestId });
	return requestId;
}

describe('retries', () => {
	it('409 is sent once', async () => {
		const requestId = await canceledJob('compat/retry');
		const { err, requests, elapsedMs } = await throughProxy((queue) =>
			queue.cancel({ model: 'compat/retry', request_id: requestId }),
		);
		assert.ok(err instanceof ConflictError, `got ${err.constructor.name}: ${err}`);
		assert.equal(err.headers.get('x-should-retry'), 'false');
		assert.equal(requests.length, 1, `requests: ${JSON.stringify(requests)}`);
		assert.equal(requests[0].retryCount, '0');
		// Without Retry-After the SDK waits at least 750 ms before its first retry.
		assert.ok(elapsedMs < 750, `took ${elapsedMs} ms`);
	});

	it('409 without x-should-retry is retried', async () => {
		// The control case: it shows that the proxy counts retries and that the header is what
		// stops them.
		const requestId = await canceledJob('compat/retry');
		const options = { headers: { 'Idempotency-Key': 'compat-retry-1' } };
		const { err, requests } = await throughProxy(
			(queue) => queue.cancel({ model: 'compat/retry', request_id: requestId }, options),
			{ stripShouldRetry: true },
			1,
		);
		assert.ok(err instanceof ConflictError, `got ${err.constructor.name}: ${err}`);
		assert.equal(requests.length, 2, `requests: ${JSON.stringify(requests)}`);
		assert.deepEqual(
			requests.map((r) => r.retryCount),
			['0', '1'],
		);
		// A retry repeats the caller's headers, so an Idempotency-Key covers the SDK's retries.
		assert.deepEqual(
			requests.map((r) => r.idempotencyKey),
			['compat-retry-1', 'compat-retry-1'],
		);
	});

	it('400, 401 and 404 are sent once', async () => {
		const cases = [
			[BadRequestError, (queue) => queue.retrieve({ model: 'compat/retry', request_id: 'x' })],
			[NotFoundError, (queue) => queue.retrieve({ model: 'compat/retry', request_id: UNKNOWN_ID })],
		];
		for (const [ErrorClass, call] of cases) {
			const { err, requests } = await throughProxy(call);
			assert.ok(err instanceof ErrorClass, `got ${err.constructor.name}: ${err}`);
			assert.equal(requests.length, 1, `${ErrorClass.name}: requests: ${JSON.stringify(requests)}`);
		}

		const proxy = await startCountingProxy(server.port);
		try {
			const queue = sdkClient(proxy.baseURL, `iq_${'1'.repeat(64)}`, { maxRetries: 2 }).beta.jig.queue;
			const err = await rejection(queue.metrics({ model: 'compat/retry' }));
			assert.equal(err.status, 401);
			assert.equal(proxy.requests.length, 1, `requests: ${JSON.stringify(proxy.requests)}`);
		} finally {
			await proxy.close();
		}
	});

	it('body over the limit is APIError 413, sent once', async () => {
		const { err, requests } = await throughProxy((queue) =>
			queue.submit({ model: 'compat/retry', payload: { text: 'x'.repeat(4096) } }),
		);
		assert.ok(err instanceof APIError, `got ${err.constructor.name}: ${err}`);
		assert.equal(err.status, 413);
		assert.equal(err.error.type, 'request_too_large');
		assert.equal(err.error.code, 'body_too_large');
		assert.equal(requests.length, 1, `requests: ${JSON.stringify(requests)}`);
	});

	it('success is sent once', async () => {
		const proxy = await startCountingProxy(server.port);
		try {
			const queue = sdkClient(proxy.baseURL, server.adminKey, { maxRetries: 2 }).beta.jig.queue;
			const { requestId } = await queue.submit({ model: 'compat/retry-ok', payload: {} });
			await queue.retrieve({ model: 'compat/retry-ok', request_id: requestId });
			await queue.metrics({ model: 'compat/retry-ok' });
			await queue.cancel({ model: 'compat/retry-ok', request_id: requestId });
			await queue.clear({ model: 'compat/retry-ok' });
			assert.deepEqual(
				proxy.requests.map((r) => `${r.method} ${r.url.split('?')[0]}`),
				[
					'POST /v1/queue/submit',
					'GET /v1/queue/status',
					'GET /v1/queue/metrics',
					'POST /v1/queue/cancel',
					'POST /v1/queue/clear',
				],
			);
		} finally {
			await proxy.close();
		}
	});
});

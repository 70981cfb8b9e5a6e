// Calls to the inferq HTTP API with the admin key of this browser tab.
//
// The key lives in sessionStorage under KEY_NAME, so it is gone when the tab closes. Every
// request sends it as "Authorization: Bearer KEY". Failures are thrown as ApiError with the
// HTTP status and the server's QueueError message, so a view can show what went wrong.
//
// SPDX-License-Identifier: MIT

const KEY_NAME = 'inferq.adminKey';
const REQUEST_TIMEOUT_MS = 10000;

export function loadKey() {
	return sessionStorage.getItem(KEY_NAME) || '';
}

export function saveKey(key) {
	sessionStorage.setItem(KEY_NAME, key);
}

export function forgetKey() {
	sessionStorage.removeItem(KEY_NAME);
}

/** A failed API call: status 0 means no HTTP response arrived. */
export class ApiError extends Error {
	constructor(status, message, body, route) {
		super(message);
		this.name = 'ApiError';
		this.status = status;
		this.body = body;
		this.route = route;
	}

	/** True when the key is missing, unknown, expired or not allowed to use the route. */
	get isAuth() {
		return this.status === 401 || this.status === 403;
	}

	/** True when this server has no such route, as a server without the admin API answers. */
	get isMissingRoute() {
		return this.status === 404 && /^no route /.test(this.body?.message || '');
	}
}

/**
 * Sends one request and returns the parsed JSON body (null when empty). Throws ApiError on a
 * status other than 2xx, on a network failure and after REQUEST_TIMEOUT_MS.
 */
export async function request(method, route, body) {
	const headers = { Authorization: `Bearer ${loadKey()}` };
	if (body !== undefined) headers['Content-Type'] = 'application/json';
	let response;
	try {
		response = await fetch(route, {
			method,
			headers,
			body: body === undefined ? undefined : JSON.stringify(body),
			cache: 'no-store',
			signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
		});
	} catch (err) {
		const why = err.name === 'TimeoutError' ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : err.message;
		throw new ApiError(0, `${method} ${route} failed: ${why}; is the server running?`, null, route);
	}

	const text = await response.text();
	let parsed = null;
	if (text) {
		try {
			parsed = JSON.parse(text);
		} catch {
			throw new ApiError(response.status, `${method} ${route} returned a body that is not JSON`, null, route);
		}
	}
	if (!response.ok) {
		const detail = parsed?.message || response.statusText;
		throw new ApiError(response.status, `${response.status}: ${detail}`, parsed, route);
	}
	return parsed;
}

function query(params) {
	const search = new URLSearchParams();
	for (const [name, value] of Object.entries(params)) {
		if (value !== undefined && value !== null && value !== '') search.set(name, String(value));
	}
	const text = search.toString();
	return text ? `?${text}` : '';
}

export const api = {
	queues: () => request('GET', '/v1/admin/queues'),
	jobs: (params) => request('GET', `/v1/admin/jobs${query(params)}`),
	job: (id) => request('GET', `/v1/admin/jobs/${encodeURIComponent(id)}`),
	workers: () => request('GET', '/v1/admin/workers'),
	cancel: (model, requestId) => request('POST', '/v1/queue/cancel', { model, request_id: requestId }),
	clear: (model) => request('POST', '/v1/queue/clear', { model }),
};

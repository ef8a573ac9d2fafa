// Durable HTTP requests from a QuickJS script running in roost, in one call.
//
//     import { request } from "./roost_http.js";
//     const r = request("POST", "https://api.example/orders", { "Content-Type": "application/json" }, "{}");
//     r.status, r.headers (an array of [name, value]), r.body (a string, UTF-8)
//
// Through roost's device folder /dev/http (the execution must run with --allow-http): the
// request is written to a new file there and the response read back from it. roost makes the
// request durably (journaled before it is sent, sent with an Idempotency-Key, answered from
// the journal when the execution is restored), so a script killed and resumed makes each
// request once. Only QuickJS's own `std` and `os` modules: no rebuild of the interpreter.
//
// A request that fails (not allowed, timed out, interrupted and not safe to repeat, malformed)
// throws an Error whose `errno` is the WASI errno and whose message is roost's reason.
//
// QuickJS-ng names its modules "qjs:std" and "qjs:os", Bellard's QuickJS "std" and "os": both
// are tried (top-level await), so one file serves either interpreter.
async function builtin(name) {
    try {
        return await import(`qjs:${name}`);
    } catch (e) {
        return await import(name);
    }
}
const std = await builtin("std");
const os = await builtin("os");

export const DEVICE = "/dev/http";
let named = 0;

function fail(errno, message) {
    const e = new Error(message || `errno ${errno}`);
    e.errno = errno;
    return e;
}

/** roost's message about the latest request that failed ("" if none). */
export function lastError() {
    return std.loadFile(`${DEVICE}/error`) || "";
}

/** A new device file, created exclusively: [fd, path]. */
function newFile() {
    for (;;) {
        const path = `${DEVICE}/js-${++named}`;
        const fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600);
        if (fd >= 0)
            return [fd, path];
        if (fd !== -20)                  // EEXIST (WASI's number): take the next name
            throw fail(-fd, `${path}: cannot create (is the execution run with --allow-http?)`);
    }
}

function writeBody(f, body) {
    if (body === undefined || body === null)
        return;
    if (typeof body === "string")
        f.puts(body);
    else if (body instanceof ArrayBuffer)
        f.write(body, 0, body.byteLength);
    else
        f.write(body.buffer, body.byteOffset, body.byteLength);      // a typed array
}

/** Make one request (an absolute http(s) URL); headers: an object or [[name, value], ...];
 * body: a string (sent as UTF-8), an ArrayBuffer or a typed array. */
export function request(method, url, headers, body) {
    const pairs = Array.isArray(headers) ? headers : Object.entries(headers || {});
    let head = `${method} ${url} HTTP/1.1\r\n`;
    for (const [name, value] of pairs)
        head += `${name}: ${value}\r\n`;
    const [fd, path] = newFile();
    const f = std.fdopen(fd, "r+");
    try {
        f.puts(head + "\r\n");
        writeBody(f, body);
        f.flush();
        const made = os.read(fd, new ArrayBuffer(1), 0, 1);     // the first read makes the request
        if (made < 0)
            throw fail(-made, lastError());
        f.seek(0, std.SEEK_SET);
        return parse(f.readAsString());
    } finally {
        f.close();
        os.remove(path);
    }
}

/** "HTTP/1.1 <status> <reason>\r\n<headers>\r\n<body>" as roost writes it. */
function parse(text) {
    const end = text.indexOf("\r\n\r\n");
    const lines = text.slice(0, end).split("\r\n");
    const headers = lines.slice(1).map((line) => {
        const colon = line.indexOf(":");
        return [line.slice(0, colon), line.slice(colon + 1).trim()];
    });
    return { status: parseInt(lines[0].split(" ")[1], 10), headers, body: text.slice(end + 4) };
}

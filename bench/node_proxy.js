// node's http-proxy as a user would set it up: keep-alive agent, one header set.
// usage: NODE_PATH=bench/node/node_modules node bench/node_proxy.js PORT UPSTREAM TOKEN_FILE
const http = require("http");
const httpProxy = require("http-proxy");
const [port, upstream, tokenFile] = process.argv.slice(2);
const token = require("fs").readFileSync(tokenFile, "utf8").trim();
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
const proxy = httpProxy.createProxyServer({ target: upstream, agent });
proxy.on("proxyReq", (proxyReq) => proxyReq.setHeader("Authorization", token));
proxy.on("error", (err, req, res) => { res.writeHead(502); res.end(String(err)); });
http.createServer((req, res) => proxy.web(req, res)).listen(Number(port), "127.0.0.1", 4096);

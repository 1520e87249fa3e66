"""The fleet example's stand-in for Cognito: authproxy's fake, listening on all interfaces of
its container, with one machine-to-machine app client, printing how many token requests it
has answered whenever that changes. With token_cache, three proxies make one."""

import asyncio

from proxy.fakes.cognito import FakeCognito


async def main() -> None:
    fake = FakeCognito(host="0.0.0.0", port=9229)
    fake.token_lifetime = 300  # short, so that a refresh (one for the fleet) shows soon
    await fake.start()
    pool = fake.add_pool("us-east-1_FleetDemo")
    fake.add_client(pool, "fleet-demo-m2m", secret="fleet-demo-m2m-secret",
                    scopes=["demo/read"])
    print("fake Cognito on :9229 (client fleet-demo-m2m)", flush=True)
    shown = None
    while True:
        calls = dict(fake.calls)
        if calls != shown:
            print(f"Cognito calls so far: {calls or 'none'}", flush=True)
            shown = calls
        await asyncio.sleep(1)


if __name__ == "__main__":
    asyncio.run(main())

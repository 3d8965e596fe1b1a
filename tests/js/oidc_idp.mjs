// A real OpenID provider for the SSO tests: the certified `oidc-provider` package on
// loopback, with its development login screens (any login name is an account; the
// tests submit the forms). Prints "ready <issuer>" once it listens.
//   node oidc_idp.mjs <port> <client_id> <client_secret> <redirect_uri> <groups.json>
import Provider from 'oidc-provider';

const [port, clientId, clientSecret, redirectUri, groupsJson] = process.argv.slice(2);
const groups = JSON.parse(groupsJson || '{}'); // login -> its groups
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  scopes: ['openid', 'email', 'groups'],
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['test-only-cookie-key'] },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, email: id, email_verified: true, groups: groups[id] || [] };
      },
    };
  },
});
provider.proxy = false;
provider.listen(Number(port), '127.0.0.1', () => console.log(`ready ${issuer}`));

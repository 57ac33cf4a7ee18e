// Sign-in with MSAL.js: authorization code flow with PKCE, by redirect.
const msal = window.msal; // the UMD bundle loaded by index.html

/**
 * The signed-in user and their access token for the broker's API.
 * Resolves after any sign-in redirect has been handled (MSAL redeems the code here).
 */
export async function createAuth(config) {
  // The redirect URI is this page's folder: it must be registered exactly so in the app registration.
  const redirectUri = new URL(".", window.location.href).href;
  const client = new msal.PublicClientApplication({
    auth: {
      clientId: config.clientId,
      authority: config.authority,
      // MSAL.js refuses authorities it does not know: Microsoft's clouds, or the hosts listed here (such
      // as the Entra ID emulator, or a custom domain). It then reads the endpoints from the authority's
      // OpenID configuration.
      knownAuthorities: [new URL(config.authority).host],
      redirectUri,
      postLogoutRedirectUri: redirectUri,
    },
    cache: { cacheLocation: "sessionStorage" },
  });
  await client.initialize();
  const result = await client.handleRedirectPromise();
  const account = result?.account ?? client.getAllAccounts()[0] ?? null;
  if (account) client.setActiveAccount(account);
  const request = { scopes: [config.scope] };

  return {
    account,
    signIn: () => client.loginRedirect(request),
    signOut: () => client.logoutRedirect({ account }),
    /** The user's access token for the broker, or null when nobody is signed in. */
    async accessToken() {
      if (!account) return null;
      try {
        return (await client.acquireTokenSilent({ ...request, account })).accessToken;
      } catch (error) {
        if (error instanceof msal.InteractionRequiredAuthError) {
          await client.acquireTokenRedirect({ ...request, account }); // leaves the page
        }
        throw error;
      }
    },
  };
}

/** Where the dashboard listens unless told otherwise. */
export const DEFAULT_DASHBOARD_PORT = 4280;

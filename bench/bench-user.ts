/** Who signs in at the fake Google in benches 8 and 9, and the calendars the fake Calendar API serves them. */
export const BENCH_USER = { email: 'bench@example.com', name: 'Bench User', sub: '424242424242424242424' };
export const BENCH_CALENDARS = [
  { id: BENCH_USER.email, summary: 'Bench primary calendar', primary: true, accessRole: 'owner', timeZone: 'Europe/Oslo' },
  { id: 'team@group.calendar.google.com', summary: 'Team', accessRole: 'reader', timeZone: 'Europe/Oslo' },
  { id: 'en.norwegian#holiday@group.v.calendar.google.com', summary: 'Holidays in Norway', accessRole: 'reader' },
];

-- Tables of the example functions (schema/app.ts).
create table public.sent_mail (
  id serial primary key,
  recipient text not null,
  subject text not null,
  body text not null default '',
  sent_at timestamptz not null default now()
);

create table public.factorials (
  n integer primary key,
  value text not null,
  computed_at timestamptz not null default now()
);

-- The blog of the Symfony article's event queue (schema/app.ts): saving a comment emits
-- comment.created; listeners mail the post's subscribers and keep a per-post comment count.
create table public.posts (
  id serial primary key,
  title text not null,
  created_at timestamptz not null default now()
);

create table public.comments (
  id serial primary key,
  post_id integer not null references public.posts (id) on delete cascade,
  author text not null,
  body text not null,
  created_at timestamptz not null default now()
);

create index comments_post_idx on public.comments (post_id);

create table public.post_subscribers (
  post_id integer not null references public.posts (id) on delete cascade,
  email text not null,
  primary key (post_id, email)
);

create table public.comment_counts (
  post_id integer primary key references public.posts (id) on delete cascade,
  count integer not null default 0,
  last_comment_id integer,
  updated_at timestamptz not null default now()
);

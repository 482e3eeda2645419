// The floor under `chatfanout`: what this machine's kernel charges for
// one small write to each of 10,000 loopback TCP connections, with no
// runtime, no WebSocket and no chat server in the way. The parent accepts
// 10,000 connections from a forked client that watches them with epoll;
// each round the parent sends 20 bytes on every connection (from 1 or more
// threads, MSG_DONTWAIT, TCP_NODELAY) and the client reports when the last
// one has arrived. Five rounds.
//
//   cc -O2 -o /tmp/fanout_floor Benchmarks/peers/floor/fanout_floor.c -lpthread
//   /tmp/fanout_floor 1; /tmp/fanout_floor 2      # sending threads
//
// Needs an fd limit above 20,000 (ulimit -n). Not run by the driver: it
// answers "how low could chatfanout go here", once, by hand.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <time.h>
#include <sys/wait.h>
#include <pthread.h>
#define N 10000
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e3+t.tv_nsec/1e6;}
int srv[N];
static int nthreads = 1; // sending threads (argv[1])
char msg[32];
void* sender(void*a){long k=(long)a;for(int i=k;i<N;i+=nthreads){if(send(srv[i],msg,20,MSG_DONTWAIT)!=20)abort();}return 0;}
int main(int argc,char**argv){
  nthreads=argc>1?atoi(argv[1]):1;
  int l=socket(AF_INET,SOCK_STREAM,0);struct sockaddr_in a={.sin_family=AF_INET,.sin_addr.s_addr=htonl(0x7f000001)};
  int one=1;setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4);
  bind(l,(void*)&a,sizeof a);listen(l,4096);socklen_t al=sizeof a;getsockname(l,(void*)&a,&al);
  int p[2];pipe(p);int q[2];pipe(q);
  pid_t pid=fork();
  if(pid==0){ // client
    int cl[N];int ep=epoll_create1(0);
    for(int i=0;i<N;i++){cl[i]=socket(AF_INET,SOCK_STREAM,0);if(connect(cl[i],(void*)&a,sizeof a)){perror("c");exit(1);}
      struct epoll_event e={.events=EPOLLIN|EPOLLET,.data.fd=cl[i]};epoll_ctl(ep,EPOLL_CTL_ADD,cl[i],&e);}
    char b=1;write(q[1],&b,1);
    for(int r=0;r<5;r++){
      read(p[0],&b,1);
      int got=0;struct epoll_event ev[256];char buf[64];
      while(got<N){int k=epoll_wait(ep,ev,256,-1);for(int j=0;j<k;j++){if(read(ev[j].data.fd,buf,64)>0)got++;}}
      double t1=now();write(q[1],&t1,sizeof t1);
    }
    exit(0);
  }
  for(int i=0;i<N;i++){srv[i]=accept(l,0,0);setsockopt(srv[i],IPPROTO_TCP,TCP_NODELAY,&one,4);}
  char b;read(q[0],&b,1);
  for(int r=0;r<5;r++){
    double t0=now();write(p[1],&b,1);
    pthread_t th[8];for(long k=0;k<nthreads;k++)pthread_create(&th[k],0,sender,(void*)k);
    for(int k=0;k<nthreads;k++)pthread_join(th[k],0);
    double ts=now();double t1;read(q[0],&t1,sizeof t1);
    printf("threads=%d send loop %.1f ms, all received %.1f ms\n",nthreads,ts-t0,t1-t0);
  }
  wait(0);
}
